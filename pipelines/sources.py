"""Readers of the original dataset releases (no conversion): class folders, CIFAR pickles, idx-ubyte."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


class FolderSource:
    """`root/<split>/<class>/<image>`; classes sorted by name (label order)."""

    def __init__(self, root: Path, split: str):
        self.root = root / split
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} does not exist: data.path must hold train/ and val/ "
                                    "class folders")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.files, labels = [], []
        for k, c in enumerate(self.classes):
            names = sorted(f for f in (self.root / c).iterdir() if f.suffix in IMAGE_EXT)
            self.files += names
            labels += [k] * len(names)
        self.labels = np.array(labels, dtype=np.int64)
        if not self.files:
            raise FileNotFoundError(f"no images under {self.root}/<class>/ (extensions {IMAGE_EXT})")

    def name(self, i: int) -> str:
        """File behind sample i (for error messages)."""
        return str(self.files[i])

    def image(self, i: int) -> Image.Image:
        """Sample i as an RGB PIL image."""
        with open(self.files[i], "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")


class ArraySource:
    """In-memory uint8 images [N, H, W, 3] (CIFAR, Fashion-MNIST)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, origin: str):
        self.images, self.labels, self.origin = images, np.asarray(labels, dtype=np.int64), origin

    def name(self, i: int) -> str:
        """Where sample i comes from."""
        return f"{self.origin}[{i}]"

    def image(self, i: int) -> Image.Image:
        """Sample i as an RGB PIL image."""
        return Image.fromarray(self.images[i])


def _find(root: Path, names: list[str]) -> Path:
    for sub in ["", "cifar-10-batches-py", "cifar-100-python", "fashion_mnist", "FashionMNIST/raw"]:
        if all((root / sub / n).exists() or (root / sub / (n + ".gz")).exists() for n in names):
            return root / sub
    raise FileNotFoundError(f"{root} holds none of {names}: point data.path at the original release")


def cifar(root: Path, split: str, hundred: bool) -> ArraySource:
    """CIFAR-10/100 python-pickle release (data_batch_1..5/test_batch, or train/test)."""
    if hundred:
        names, key = (["train"] if split == "train" else ["test"]), b"fine_labels"
    else:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        key = b"labels"
    d = _find(root, names)
    xs, ys = [], []
    for n in names:
        with open(d / n, "rb") as f:
            try:
                batch = pickle.load(f, encoding="bytes")
            except Exception as e:
                raise ValueError(f"{d / n} is not a CIFAR python pickle ({e}); re-download it") from e
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[key], dtype=np.int64))
    return ArraySource(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), str(d))


def _idx(path: Path) -> np.ndarray:
    p = path if path.exists() else path.with_name(path.name + ".gz")
    raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{p}: idx header says {tuple(dims)} but holds {data.size} bytes; file truncated?")
    return data.reshape(dims)


def fashion_mnist(root: Path, split: str) -> ArraySource:
    """Fashion-MNIST idx-ubyte files (optionally .gz); grey replicated to RGB."""
    pre = "train" if split == "train" else "t10k"
    names = [f"{pre}-images-idx3-ubyte", f"{pre}-labels-idx1-ubyte"]
    d = _find(root, names)
    x = _idx(d / names[0])  # [N, 28, 28]
    y = _idx(d / names[1])
    return ArraySource(np.repeat(x[..., None], 3, axis=3), y, str(d / names[0]))


def open_source(dataset: str, root: str, split: str) -> FolderSource | ArraySource:
    """The original release of `dataset` under `root`."""
    r = Path(root)
    if dataset in ("cifar10", "cifar100"):
        return cifar(r, split, dataset == "cifar100")
    if dataset == "fashion_mnist":
        return fashion_mnist(r, split)
    if dataset in ("imagenet", "folder"):
        return FolderSource(r, split)
    raise ValueError(f"data.dataset={dataset!r} has no source reader: use backend 'dvs' (converted frames)")
