"""ffcv backend: reads OUT/<split>.beton; seeded decode+crop+flip on CPU threads, the rest on the device."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty

import numpy as np
import torch

from pipelines.base import DataError, Loader

_FAILED: dict[int, BaseException] = {}  # thread id -> exception of a dead ffcv pipeline thread
_watch = {"active": 0, "previous": None}  # iterations running, the excepthook ours replaced
_watch_lock = threading.Lock()


def _record(args) -> None:
    """threading.excepthook while ffcv iterates: note the exceptions of ffcv's own threads, then chain."""
    if type(args.thread).__module__.startswith("ffcv."):
        _FAILED[args.thread.ident] = args.exc_value
    (_watch["previous"] or threading.__excepthook__)(args)


@contextmanager
def _watching_ffcv_threads():
    """Install `_record` for the duration of an iteration (nested ones share it); restore the old hook."""
    with _watch_lock:
        if _watch["active"] == 0:
            _watch["previous"], threading.excepthook = threading.excepthook, _record
        _watch["active"] += 1
    try:
        yield
    finally:
        with _watch_lock:
            _watch["active"] -= 1
            if _watch["active"] == 0 and threading.excepthook is _record:
                threading.excepthook, _watch["previous"] = _watch["previous"], None


def guarded_iter(ffcv_loader, path: Path):
    """Iterate an ffcv Loader; a dead pipeline thread raises a DataError instead of hanging."""
    with _watching_ffcv_threads():
        it = iter(ffcv_loader)  # starts ffcv's EpochIterator thread
        try:
            while True:
                try:
                    item = it.output_queue.get(timeout=0.2)
                except Empty:
                    if not it.is_alive():
                        exc = _FAILED.pop(it.ident, None)
                        raise DataError(f"{path}: the ffcv pipeline thread died: {exc!r}") from exc
                    continue
                if item is None:
                    return
                slot, result = item
                if getattr(it, "current_stream", None) is not None:  # needs CUDA: wait for the H2D copy
                    it.current_stream.wait_stream(it.cuda_streams[slot])
                yield result
        finally:
            stop_thread(it)


def stop_thread(it) -> None:
    """Stop ffcv's EpochIterator thread and wait for it before its memory is released.

    ffcv's own `close()` only sets the event and unmaps the file: a thread still decoding a batch then reads
    freed memory, or is killed inside numba's parallel code at interpreter exit ("terminate called without an
    active exception"). The thread sees the event when its output queue is full; a thread blocked on its
    final `put(None)` is freed by taking one item."""
    it.terminate_event.set()
    while it.is_alive():
        it.join(timeout=1.0)
        if it.is_alive() and it.output_queue.full():
            try:
                it.output_queue.get_nowait()
            except Empty:
                pass
    it.close()


def make_order(owner):
    """An ffcv `order` that plays back `owner`'s sharded, resumable order."""
    return _order_class()(owner)


def _order_class():
    from ffcv.traversal_order.base import TraversalOrder

    class _Given(TraversalOrder):
        """Plays back the order our Loader computed (ffcv's own orders are not resumable mid-epoch)."""

        current: np.ndarray = np.zeros(0, dtype=np.uint64)

        def sample_order(self, epoch: int):
            return _Given.current

    class _Factory(TraversalOrder):  # ffcv calls `order(loader)` on TraversalOrder instances
        def __init__(self, owner):
            self.owner = owner

        def __call__(self, loader):
            order = _Given(loader)
            self.owner._ffcv_order = order
            return order

        def sample_order(self, epoch: int):
            raise NotImplementedError

    return _Factory


def beton_path(root: str, split: str) -> Path:
    """OUT/<split>.beton, or one clear error."""
    p = Path(root) / f"{split}.beton"
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist: convert the dataset with `dassdp-convert --format ffcv`"
                                f" and point data.path at its output folder")
    return p


def read_manifest(root: str) -> dict:
    """OUT/manifest.json (empty dict when absent)."""
    p = Path(root) / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def beton_labels(path: Path, with_sizes: bool = False):
    """Labels from the beton's metadata table (no decode); optionally image (height, width) [N, 2]."""
    from ffcv.reader import Reader

    want = (read_manifest(str(path.parent)).get("files") or {}).get(path.name, {}).get("bytes")
    if want is not None and path.stat().st_size != int(want):
        raise DataError(f"{path} has {path.stat().st_size} bytes but the manifest says {want}: the file is "
                        "truncated or was replaced; re-run the conversion")
    try:
        r = Reader(str(path))
    except Exception as e:  # ffcv's own errors on a damaged header/table are bare numpy errors
        raise DataError(f"{path} cannot be read as a .beton ({type(e).__name__}: {e}); the file is "
                        "truncated or corrupt: re-run the conversion") from None
    names = list(r.handlers)
    if "label" not in names:
        raise ValueError(f"{path} has fields {names}; expected a 'label' field")
    labels = np.asarray(r.metadata[f"f{names.index('label')}"], dtype=np.int64).reshape(-1)
    if not with_sizes:
        return labels
    if "image" not in names:
        raise ValueError(f"{path} has fields {names}; expected an 'image' field (RGBImageField)")
    meta = r.metadata[f"f{names.index('image')}"]
    return labels, np.stack([meta["height"], meta["width"]], 1).astype(np.int64)


class FFCVLoader(Loader):
    """ffcv Loader with our order (sharded, resumable) and a seeded decoder; normalise on the device."""

    field = "image"

    def _read_labels(self) -> np.ndarray:
        self.beton = beton_path(self.cfg.path, self.split)
        self.manifest = read_manifest(self.cfg.path)
        labels, self._hw = beton_labels(self.beton, with_sizes=True)  # [N], [N, 2] (height, width)
        self._windows = np.zeros((len(labels), 5), dtype=np.int32)  # live table read by the decoder
        self._fixed = np.zeros(len(labels), dtype=bool)  # samples whose seed-free window is in the table
        self._error = np.zeros(1, dtype=np.uint64)  # live: 1 + index of a sample that failed to decode
        self._ffcv = None
        return labels

    def _decoder(self):
        from pipelines.ffcv_ops import WindowCropDecoder

        return WindowCropDecoder(self.recipe.size, self._windows, self._error)

    def _fill_windows(self, order: np.ndarray) -> None:
        """Crop windows + flips of this epoch's samples (host, the same draws as torchvision/DALI, made for
        all samples at once: `draws.sample_windows`). Windows that draw nothing (evaluation; training without
        random crops or flips) are filled once per sample."""
        from pipelines.draws import sample_windows

        fixed = not self.train or not (self.recipe.random_crop or self.recipe.hflip)
        if fixed:
            order = order[~self._fixed[order]]
        if len(order):
            self._windows[order] = sample_windows(self.recipe, self.train, self._hw[order],
                                                  self.sample_seeds(order))
        if fixed:
            self._fixed[order] = True

    def _pipelines(self) -> dict:
        from ffcv.fields.basics import IntDecoder
        from ffcv.transforms import Squeeze, ToDevice, ToTensor

        cuda = self.device.type == "cuda"
        to_dev = [ToDevice(self.device, non_blocking=True)] if cuda else []  # needs CUDA
        return {self.field: [self._decoder(), ToTensor(), *to_dev],  # uint8 [B, H, W, 3]
                "label": [IntDecoder(), ToTensor(), Squeeze(1), *to_dev]}

    def _build(self):
        from ffcv.loader import Loader as FfcvLoader

        self._ffcv = FfcvLoader(str(self.beton), batch_size=self.batch_size,
                                num_workers=max(1, self.workers), os_cache=self.cfg.os_cache,
                                order=make_order(self), pipelines=self._pipelines(),
                                drop_last=self.drop_last, seed=self.seed, batches_ahead=2)

    def _batches(self, order: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._ffcv is None:
            self._build()
        self._fill_windows(order)
        type(self._ffcv_order).current = order.astype(np.uint64)
        self._ffcv.first_traversal_order = order  # ffcv sizes the epoch from this attribute
        self._error[0] = 0
        for b, (x, y) in enumerate(guarded_iter(self._ffcv, self.beton)):
            if self._error[0]:
                bad = int(self._error[0]) - 1
                raise DataError(f"{self.beton}: sample {bad} failed to decode (batch {b}); re-convert it")
            yield x, y.clone()  # ffcv reuses its buffers; the stage copies images, labels we copy here
