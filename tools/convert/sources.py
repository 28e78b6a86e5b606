"""Scan each supported source into a Plan: classes and, per split, the samples with their labels."""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import IMAGE_EXTS, ConvertError, list_class_dirs, load_pickle, natural_key

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Split:
    """The samples of one split: labels plus either file paths or an in-memory image array."""

    labels: np.ndarray  # int64 [N]
    files: list[str] | None = None  # one path per sample (file sources)
    images: np.ndarray | None = None  # uint8 [N, H, W, 3] (array sources)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Plan:
    """What to convert: the source description, classes in label order, and the splits."""

    source: dict
    input_kind: str  # "files" (images), "array" (tiny images), "events"
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)
    reader: str = "dataset"  # event samples: the dataset's own readers, or "events" (reader by extension)

    @property
    def kind(self) -> str:
        return "frames" if self.input_kind == "events" else "images"


def _class_files(folder: Path, exts: tuple[str, ...], order: str = "natural") -> list[Path]:
    """Files of one class folder in `order`: lexical (str sort, torchvision DatasetFolder) or natural."""
    if order not in ("lexical", "natural"):
        raise ConvertError(f"--order {order}: use 'lexical' or 'natural'.")
    key = (lambda p: natural_key(p.name)) if order == "natural" else (lambda p: p.name)
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
    ]
    if not files:
        raise ConvertError(
            f"{folder}: empty class folder (no {'/'.join(exts)} files); remove the folder or add its samples."
        )
    return sorted(files, key=key)


def _tree_split(root: Path, classes: list[str], exts=IMAGE_EXTS, order="natural") -> Split:
    files, labels = [], []
    for label, name in enumerate(classes):
        cls_files = _class_files(root / name, exts, order)
        files += [str(p) for p in cls_files]
        labels += [label] * len(cls_files)
    return Split(labels=np.asarray(labels, np.int64), files=files)


def scan_imagenet(root: Path) -> Plan:
    """ImageNet-style tree: root/train/<class>/*, root/val/<class>/* with identical class lists."""
    root = Path(root).resolve()
    train_cls, val_cls = list_class_dirs(root / "train"), list_class_dirs(root / "val")
    if not train_cls:
        raise ConvertError(f"{root / 'train'}: no class folders found.")
    if train_cls != val_cls:
        only_t = sorted(set(train_cls) - set(val_cls))[:5]
        only_v = sorted(set(val_cls) - set(train_cls))[:5]
        raise ConvertError(
            f"{root}: train/ and val/ class lists differ (only in train: {only_t}, only in val: "
            f"{only_v}); make both folders hold the same class sub-folders."
        )
    plan = Plan({"type": "imagenet", "path": str(root)}, "files", train_cls)
    plan.splits = {"train": _tree_split(root / "train", train_cls), "val": _tree_split(root / "val", val_cls)}
    return plan


def scan_folder(root: Path, val_fraction: float = 0.1) -> Plan:
    """Any class-folder tree: train/ + val/ sub-trees like imagenet, else the last share per class is val."""
    root = Path(root).resolve()
    if (root / "train").is_dir() and (root / "val").is_dir():
        plan = scan_imagenet(root)
        plan.source["type"] = "folder"
        return plan
    if not 0.0 <= val_fraction < 1.0:
        raise ConvertError(f"--val-fraction {val_fraction}: must be in [0, 1).")
    classes = list_class_dirs(root)
    if not classes:
        raise ConvertError(f"{root}: no class folders found.")
    whole = _tree_split(root, classes)
    tr_idx, va_idx = [], []
    for label in range(len(classes)):
        idx = np.flatnonzero(whole.labels == label)
        n_val = int(math.ceil(len(idx) * val_fraction))
        tr_idx += idx[: len(idx) - n_val].tolist()
        va_idx += idx[len(idx) - n_val :].tolist()
    plan = Plan({"type": "folder", "path": str(root), "val_fraction": val_fraction}, "files", classes)
    for name, idx in (("train", tr_idx), ("val", va_idx)):
        plan.splits[name] = Split(whole.labels[idx], [whole.files[i] for i in idx])
    return plan


def _cifar_images(d: dict, path: Path) -> np.ndarray:
    data = d.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ConvertError(
            f"{path}: key 'data' must be a uint8 array [N, 3072], got {getattr(data, 'shape', type(data))}."
        )
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # [N, 32, 32, 3]


def _cifar_labels(d: dict, key: str, path: Path, n: int, k: int) -> np.ndarray:
    if key not in d:
        raise ConvertError(f"{path}: missing key '{key}'.")
    labels = np.asarray(d[key], np.int64)
    if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= k)):
        raise ConvertError(f"{path}: '{key}' must hold {n} labels in [0, {k}).")
    return labels


def _find_dir(root: Path, name: str, marker: str) -> Path:
    root = Path(root).resolve()
    for cand in (root, root / name):
        if (cand / marker).exists():
            return cand
    raise ConvertError(f"{root}: no {name}/{marker} here; pass the folder that holds the extracted {name}/.")


def scan_cifar10(root: Path) -> Plan:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta (python pickles)."""
    d = _find_dir(root, "cifar-10-batches-py", "batches.meta")
    meta = load_pickle(d / "batches.meta")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", [])]
    if len(classes) != 10:
        raise ConvertError(f"{d / 'batches.meta'}: 'label_names' must list 10 classes.")
    plan = Plan({"type": "cifar10", "path": str(d)}, "array", classes)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("val", ["test_batch"])):
        imgs, labels = [], []
        for n in names:
            b = load_pickle(d / n)
            imgs.append(_cifar_images(b, d / n))
            labels.append(_cifar_labels(b, "labels", d / n, len(imgs[-1]), 10))
        plan.splits[split] = Split(np.concatenate(labels), images=np.concatenate(imgs))
    return plan


def scan_cifar100(root: Path, label_type: str = "fine") -> Plan:
    """cifar-100-python/: train, test, meta (python pickles); fine (100) or coarse (20) labels."""
    if label_type not in ("fine", "coarse"):
        raise ConvertError(f"--label-type {label_type}: use 'fine' or 'coarse'.")
    d = _find_dir(root, "cifar-100-python", "meta")
    meta = load_pickle(d / "meta")
    classes = [
        c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(f"{label_type}_label_names", [])
    ]
    k = 100 if label_type == "fine" else 20
    if len(classes) != k:
        raise ConvertError(f"{d / 'meta'}: '{label_type}_label_names' must list {k} classes.")
    plan = Plan({"type": "cifar100", "path": str(d), "label_type": label_type}, "array", classes)
    for split, name in (("train", "train"), ("val", "test")):
        b = load_pickle(d / name)
        imgs = _cifar_images(b, d / name)
        labels = _cifar_labels(b, f"{label_type}_labels", d / name, len(imgs), k)
        plan.splits[split] = Split(labels, images=imgs)
    return plan


def read_idx(path: Path) -> np.ndarray:
    """Read an idx-ubyte file (optionally .gz) into a uint8 array."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ConvertError(f"{path}: unreadable ({e}); re-download this file.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConvertError(f"{path}: not an idx-ubyte file (bad magic); expected unsigned-byte idx data.")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    n = int(np.prod(dims))
    body = 4 + 4 * ndim
    if len(raw) != body + n:
        raise ConvertError(
            f"{path}: truncated or padded idx file ({len(raw) - body} data bytes, "
            f"header says {n}); re-download this file."
        )
    return np.frombuffer(raw, np.uint8, offset=body).reshape(dims)


def _idx_file(d: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (d / name).exists():
            return d / name
    raise ConvertError(f"{d}: missing {stem}[.gz]; pass the folder with the four Fashion-MNIST idx files.")


def scan_fashion_mnist(root: Path | None) -> Plan:
    """Fashion-MNIST idx-ubyte files (train-*, t10k-*), gzipped or not; grey replicated to RGB."""
    d = Path(root or FASHION_DEFAULT).resolve()
    plan = Plan({"type": "fashion-mnist", "path": str(d)}, "array", list(FASHION_CLASSES))
    for split, pre in (("train", "train"), ("val", "t10k")):
        img_path, lab_path = (
            _idx_file(d, f"{pre}-images-idx3-ubyte"),
            _idx_file(d, f"{pre}-labels-idx1-ubyte"),
        )
        imgs, labels = read_idx(img_path), read_idx(lab_path).astype(np.int64)
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise ConvertError(
                f"{img_path}: {imgs.shape} images do not match {labels.shape} labels in {lab_path}."
            )
        if labels.size and labels.max() >= 10:
            raise ConvertError(f"{lab_path}: label {labels.max()} outside 0..9.")
        rgb = np.repeat(imgs[..., None], 3, axis=-1)  # [N, 28, 28, 3]
        plan.splits[split] = Split(labels, images=rgb)
    return plan
