"""CIFAR-format data for `dassdp-bench e2e`: the python-pickle release layout, 32x32 crops of real photos.

The files have the layout and encoding of the CIFAR release (Python 2 pickles: `data` uint8 [N, 3072] in
channel-planar order, `labels` or `fine_labels`), so a trainer reads them as it reads the real release:
ours through `pipelines.sources.cifar` (encoding='bytes'), torchvision's CIFAR10/CIFAR100 with
encoding='latin1'. Their bytes differ from the release's, so torchvision's md5 check fails on them.
Images are square crops of the photos of `tools.bench.photos` (one class per photo, then cycling).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tools.bench.photos import source_photos

VERSION = 1
LAYOUT = {  # dataset -> (folder, train files, test file, label key, meta file, meta key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
                "batches.meta", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta", "fine_label_names", 100),
}


class _Py2Pickler(pickle._Pickler):
    """Writes `bytes` as Python 2 `str` (BINSTRING), as the CIFAR release does.

    Such strings load as bytes with encoding='bytes' and as str with encoding='latin1': both readers of the
    release then find their keys. Python 3's own pickler writes bytes as a call that loads as bytes only.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _dump(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def crop32(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (20-100 % of the short side), bicubic to 32x32, maybe flipped: [32, 32, 3]."""
    h, w = photo.shape[:2]
    side = int(min(h, w) * np.sqrt(rng.uniform(0.2, 1.0)))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((32, 32), Image.BICUBIC)
    arr = np.asarray(img)  # [32, 32, 3]
    return arr[:, ::-1] if rng.random() < 0.5 else arr


def _batch(photos: list[np.ndarray], idx: range, n_classes: int, label_key: str,
           rng: np.random.Generator) -> dict:
    labels = [i % len(photos) % n_classes for i in idx]
    data = np.stack([crop32(photos[i % len(photos)], rng) for i in idx]) if len(idx) else \
        np.zeros((0, 32, 32, 3), np.uint8)  # [N, 32, 32, 3]
    flat = np.ascontiguousarray(data.transpose(0, 3, 1, 2).reshape(len(idx), 3072))  # [N, 3072] planar
    return {b"batch_label": b"dassdp-bench", label_key.encode(): labels, b"data": flat,
            b"filenames": [f"{i:06d}.png".encode() for i in idx]}


def build_cifar(root: str | Path, dataset: str, n_train: int, n_test: int, *, seed: int = 0) -> Path:
    """Write root/<release folder>/ (cached); returns root, the value for data.path or --data-path."""
    if dataset not in LAYOUT:
        raise ValueError(f"dassdp-bench e2e writes CIFAR data only; data.dataset={dataset!r} is not one of "
                         f"{', '.join(LAYOUT)}: pick a cifar10 or cifar100 config")
    root = Path(root)
    settings = {"version": VERSION, "dataset": dataset, "n_train": n_train, "n_test": n_test, "seed": seed}
    stamp = root / "cifar.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return root
    folder, train_files, test_file, label_key, meta_file, meta_key, n_classes = LAYOUT[dataset]
    named = source_photos()
    names, photos = sorted(named), [named[k] for k in sorted(named)]
    rng = np.random.default_rng(seed)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / folder).mkdir(parents=True)
    bounds = np.linspace(0, n_train, len(train_files) + 1).astype(int)
    for name, a, b in zip(train_files, bounds[:-1], bounds[1:]):
        _dump(_batch(photos, range(a, b), n_classes, label_key, rng), tmp / folder / name)
    _dump(_batch(photos, range(n_test), n_classes, label_key, rng), tmp / folder / test_file)
    classes = [(names[i] if i < len(names) else f"class_{i}").encode() for i in range(n_classes)]
    _dump({meta_key.encode(): classes, b"num_cases_per_batch": int(bounds[1] - bounds[0])},
          tmp / folder / meta_file)
    stamp_tmp = tmp / "cifar.json"
    stamp_tmp.write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root
