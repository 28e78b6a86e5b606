"""Writers of tiny datasets in the exact on-disk formats users arrive with (used by the converter tests)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tools.bench.synthetic_events import write_aedat2

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickle(path: Path, obj: dict) -> None:
    # the releases were written by Python 2 cPickle: byte-string keys, numpy uint8 data, list labels
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2))


def make_cifar10(root: Path, per_batch: int = 6, n_test: int = 7, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with 5 train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    _pickle(d / "batches.meta", {"label_names": [n.encode() for n in CIFAR10_NAMES], "num_vis": 3072})
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        _pickle(
            d / name,
            {
                "batch_label": name.encode(),
                "labels": rng.integers(0, 10, n).tolist(),
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "filenames": [f"img_{i}.png".encode() for i in range(n)],
            },
        )
    return d


def make_cifar100(root: Path, n_train: int = 20, n_test: int = 9, seed: int = 1) -> Path:
    """cifar-100-python/ with train, test and meta."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    _pickle(
        d / "meta",
        {
            "fine_label_names": [f"fine{i}".encode() for i in range(100)],
            "coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    for name, n in (("train", n_train), ("test", n_test)):
        _pickle(
            d / name,
            {
                "fine_labels": rng.integers(0, 100, n).tolist(),
                "coarse_labels": rng.integers(0, 20, n).tolist(),
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            },
        )
    return d


def write_idx(path: Path, arr: np.ndarray) -> None:
    """idx-ubyte file (gzipped when the name ends in .gz)."""
    raw = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


def make_fashion(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 2) -> Path:
    """The four Fashion-MNIST idx files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for pre, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{pre}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{pre}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n))
    return root


def photo(i: int, size: int = 48) -> np.ndarray:
    """A real-photo crop (scikit-image sample images) as RGB uint8 [size, size, 3]."""
    from skimage import data as skdata

    img = [skdata.astronaut, skdata.coffee, skdata.chelsea][i % 3]()
    y, x = 30 * (i % 7), 40 * (i % 5)
    return np.ascontiguousarray(img[y : y + size, x : x + size])


def make_jpeg_tree(root: Path, classes=("cat", "dog"), n_train: int = 3, n_val: int = 2) -> Path:
    """imagenet-style tree of real-photo JPEGs; also one PNG, one greyscale and one CMYK JPEG in train."""
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(photo(k)).save(root / split / c / f"{c}_{i}.JPEG", quality=92)
                k += 1
    Image.fromarray(photo(k)).save(root / "train" / classes[0] / "extra_png.png")
    Image.fromarray(photo(k + 1)).convert("L").save(
        root / "train" / classes[1] / "extra_grey.jpg", quality=92
    )
    Image.fromarray(photo(k + 2)).convert("CMYK").save(
        root / "train" / classes[1] / "extra_cmyk.jpg", quality=92
    )
    return root


def raw_events(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Raw DVS128 (xr, yr, pr, t) as in the AEDAT 2.0 address word."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 2_000_000, n)).astype(np.uint32)
    return rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), t


def write_aedat4_like_dv(path: Path, xr, yr, pr, t) -> None:
    """AEDAT4 via dv-processing with DV's DVS128 decoding (libcaer: flip x, flip y, invert polarity)."""
    import dv_processing as dv

    store = dv.EventStore()
    for a, b, c, d in zip(t, 127 - xr, 127 - yr, 1 - pr):
        store.push_back(int(a) + 1_600_000_000_000_000, int(b), int(c), bool(d))
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig("DVS128", (128, 128)))
    writer.writeEvents(store)
    del writer


def make_dvs_trees(root: Path, classes=("airplane", "cat"), per_class: int = 4, n_events: int = 600) -> tuple:
    """The same recordings as the AEDAT 2.0 release tree and as tonic's CIFAR10DVS/<class>/*.aedat4 tree."""
    a2, a4 = root / "aedat2", root / "tonic" / "CIFAR10DVS"
    for ci, c in enumerate(classes):
        (a2 / c).mkdir(parents=True)
        (a4 / c).mkdir(parents=True)
        for i in range(per_class):
            ev = raw_events(n_events + 37 * i, seed=100 * ci + i)
            write_aedat2(a2 / c / f"cifar10_{c}_{i}.aedat", *ev)
            write_aedat4_like_dv(a4 / c / f"cifar10_{c}_{i}.aedat4", *ev)
    return a2, root / "tonic"
