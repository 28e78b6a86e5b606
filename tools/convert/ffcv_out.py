"""Assemble a .beton from finished chunks with FFCV's own writer (one writer process: deterministic bytes)."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from .common import sha256_file, tmp_name

MIN_PAGE = 1 << 23  # ffcv's default page size (4 x 2 MiB)


class _PreEncodedImage:
    """Stands in for RGBImageField.encode: stores (mode, height, width, bytes) computed by our pool."""

    def __call__(self, destination, value, malloc):
        mode, height, width, data = value
        destination["mode"] = mode
        destination["height"], destination["width"] = height, width
        destination["data_ptr"], storage = malloc(data.nbytes)
        storage[:] = data


class ChunkDataset:
    """Indexable view over finished chunk files (loads one chunk at a time)."""

    def __init__(self, chunks: list[Path], kind: str):
        self.chunks, self.kind = [Path(c) for c in chunks], kind
        self.counts = []
        for c in self.chunks:
            with np.load(c) as z:  # npz members load lazily: only the labels are read here
                self.counts.append(len(z["labels"]))
        self.starts = np.cumsum([0] + self.counts)
        self._cache: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _chunk(self, c: int) -> dict:
        if self._cache is None or self._cache[0] != c:
            with np.load(self.chunks[c]) as z:
                self._cache = (c, {k: z[k] for k in z.files})
        return self._cache[1]

    def __getitem__(self, i: int):
        c = int(np.searchsorted(self.starts, i, side="right") - 1)
        z, j = self._chunk(c), i - int(self.starts[c])
        label = int(z["labels"][j])
        if self.kind == "frames":
            return z["frames"][j], label
        data = z["data"][z["offsets"][j] : z["offsets"][j + 1]]
        return (int(z["mode"][j]), int(z["height"][j]), int(z["width"][j]), data), label

    def max_sample_bytes(self, frame_bytes: int) -> int:
        """Largest stored sample (reads only the small 'offsets' member of each image chunk)."""
        if self.kind == "frames":
            return frame_bytes
        best = 0
        for c, n in zip(self.chunks, self.counts):
            if n:
                with np.load(c) as z:
                    best = max(best, int(np.diff(z["offsets"]).max()))
        return best


def _fields(kind: str, opts: dict) -> dict:
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    if kind == "frames":
        W, H = opts["sensor_size"]
        with warnings.catch_warnings():  # ffcv warns that torch lacks uint16; the contract says uint16
            warnings.simplefilter("ignore")
            frames = NDArrayField(np.dtype("<u2"), (opts["T"], 2, H, W))
        return {"frames": frames, "label": IntField()}
    image = RGBImageField(
        write_mode=opts["write_mode"],
        max_resolution=opts["max_resolution"],
        jpeg_quality=opts["jpeg_quality"],
        compress_probability=opts["compress_probability"],
        smart_threshold=opts["smart_threshold"],
    )
    image.encode = _PreEncodedImage()  # type(image) stays RGBImageField, so the .beton header names it
    return {"image": image, "label": IntField()}


def write_beton(
    chunks: list[Path], kind: str, dst: Path, tmp_base: Path, opts: dict, progress: bool = True
) -> dict:
    """Write `dst` (.beton) from chunk files via a temporary name; returns its sha256 and size."""
    import ffcv.writer
    from ffcv.writer import DatasetWriter
    from tqdm import tqdm

    ffcv.writer.tqdm = functools.partial(tqdm, disable=not progress, desc=f"write {dst.name}", unit="sample")

    ds = ChunkDataset(chunks, kind)
    page = MIN_PAGE
    W, H = opts["sensor_size"]
    while page < 2 * ds.max_sample_bytes(opts["T"] * 2 * H * W * 2):
        page *= 2
    tmp = tmp_name(tmp_base)
    writer = DatasetWriter(str(tmp), _fields(kind, opts), page_size=page, num_workers=1)
    writer.from_indexed_dataset(ds, chunksize=256)
    os.replace(tmp, dst)
    return {"sha256": sha256_file(dst), "bytes": dst.stat().st_size}
