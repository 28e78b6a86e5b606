"""Per-dataset recipe values (mean/std, crops, flip, eval crop, mixup alphas, classes) from a DataConfig.

`fill_defaults` writes the dataset-dependent choices into the DataConfig once (the job's config, so
`--print-config` and the run folder show them); `resolve` turns a DataConfig into the `Recipe` every
backend reads. A `folder` dataset's default follows its images' size: the converter records the longest
image side in the manifest (`image_sides`); a class-folder tree read directly is measured from its files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipelines.config import DataConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# CIFAR-10 values of the recipe; CIFAR-100 and Fashion-MNIST: per-channel statistics of their train sets.
STATS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "folder": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
}
CLASSES = {"imagenet": 1000, "cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "cifar10dvs": 10,
           "dvs128gesture": 11}
# (mixup_alpha, cutmix_alpha): ImageNet recipe 0.2 / 1.0; CIFAR recipe mixup 0.5 only.
MIXUP = {"imagenet": (0.2, 1.0), "folder": (0.2, 1.0)}
DVS = ("cifar10dvs", "dvs128gesture", "events")
TINY = ("cifar10", "cifar100", "fashion_mnist")  # resize only, no random crop (recipe)
TINY_SIDE = 64  # a `folder` dataset whose longest image side is at most this gets the tiny-image recipe
PROBE_FILES = 256  # files measured (headers only) when a class-folder tree has no manifest


@dataclass(frozen=True)
class Recipe:
    """Resolved values every backend uses."""

    dataset: str
    size: tuple[int, int]  # (H, W) model input
    mean: tuple[float, ...] | None  # None: no normalisation (DVS)
    std: tuple[float, ...] | None
    crop_pct: float
    eval_resize: int  # shorter side before the eval center crop (timm: floor(size / crop_pct))
    train_crop: str  # "rrc", "pad" or "none" (resize only)
    crop_scale: tuple[float, float]  # rrc
    crop_ratio: tuple[float, float]  # rrc
    crop_padding: int  # pad
    hflip: float  # probability of a horizontal flip (training)
    mixup_alpha: float
    cutmix_alpha: float
    num_classes: int | None

    @property
    def is_dvs(self) -> bool:
        """Event-frame dataset."""
        return self.dataset in DVS

    @property
    def random_crop(self) -> bool:
        """RandomResizedCrop windows (drawn on the source image)."""
        return self.train_crop == "rrc"


def read_manifest(root: str) -> dict:
    """ROOT/manifest.json of a converted dataset (empty dict when absent or unreadable)."""
    try:
        return json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=16)
def longest_side(root: str) -> int | None:
    """Longest image side (px) of a `folder` dataset: the manifest's record, else measured on up to
    PROBE_FILES images of ROOT/train/<class>/ (headers only); None when neither is there."""
    sides = read_manifest(root).get("image_sides")
    if sides:
        return int(sides["max"])
    from PIL import Image

    from pipelines.sources import IMAGE_EXT

    train = Path(root) / "train"
    files = sorted(f for f in train.glob("*/*") if f.suffix in IMAGE_EXT) if train.is_dir() else []
    step = max(1, len(files) // PROBE_FILES)
    measured = []
    for f in files[::step]:
        try:
            with Image.open(f) as img:
                measured.append(max(img.size))
        except OSError:
            continue  # the loader names unreadable files when it reaches them
    return max(measured) if measured else None


def manifest_classes(cfg: DataConfig) -> int | None:
    """Class count of a `folder`/`events` dataset: its manifest's, or the class folders of a tree."""
    names = read_manifest(cfg.path).get("classes")
    if names:
        return len(names)
    train = Path(cfg.path) / "train"
    if cfg.dataset == "folder" and cfg.backend == "torchvision" and train.is_dir():
        return sum(1 for d in train.iterdir() if d.is_dir()) or None
    return None


def default_crop(cfg: DataConfig) -> str:
    """The training crop of `train_crop: auto` for this dataset."""
    if cfg.dataset in DVS or cfg.dataset in TINY:
        return "none"
    if cfg.dataset == "folder":
        side = longest_side(cfg.path)
        return "none" if side is not None and side <= TINY_SIDE else "rrc"
    return "rrc"


def fill_defaults(cfg: DataConfig) -> DataConfig:
    """Write the dataset-dependent choices (train_crop, hflip, crop_pct, num_classes) into `cfg`, once."""
    if cfg.train_crop == "auto":
        cfg.train_crop = default_crop(cfg)
    cfg.hflip = _flip(cfg)
    if cfg.crop_pct is None:
        cfg.crop_pct = 224 / 235 if cfg.train_crop == "rrc" else 1.0
    if cfg.num_classes is None and cfg.dataset in ("folder", "events"):
        cfg.num_classes = manifest_classes(cfg)
    return cfg


def _flip(cfg: DataConfig) -> float:
    if cfg.hflip == "auto":
        return 0.0 if cfg.dataset in DVS else 0.5  # DVS: its own augment flips (data.augment)
    if isinstance(cfg.hflip, bool):
        return 0.5 if cfg.hflip else 0.0
    return float(cfg.hflip)


def describe(cfg: DataConfig) -> str:
    """One line: the training and eval transform a filled DataConfig gives, and why (folder data)."""
    why = ""
    if cfg.dataset == "folder":
        side = longest_side(cfg.path)
        why = f" (images up to {side} px)" if side is not None else " (image size unknown)"
    crop = {"rrc": f"RandomResizedCrop scale {list(cfg.crop_scale)}", "pad": f"pad {cfg.crop_padding} + "
            "random crop", "none": "resize only"}.get(cfg.train_crop, cfg.train_crop)
    return (f"data: {cfg.dataset}{why}: train {crop}, flip p={cfg.hflip}; eval crop_pct "
            f"{cfg.crop_pct:.4f}")


def resolve(cfg: DataConfig) -> Recipe:
    """The recipe of `cfg`; choices still `auto`/None are filled as `fill_defaults` would."""
    if len(cfg.input_size) != 3:
        raise ValueError(f"data.input_size={cfg.input_size} must be [C, H, W]")
    size = (int(cfg.input_size[1]), int(cfg.input_size[2]))
    dvs = cfg.dataset in DVS
    mean, std = STATS.get(cfg.dataset, (None, None)) if not dvs else (None, None)
    mean = tuple(cfg.mean) if cfg.mean is not None else mean
    std = tuple(cfg.std) if cfg.std is not None else std
    crop = default_crop(cfg) if cfg.train_crop == "auto" else cfg.train_crop
    if dvs and crop != "none":
        raise ValueError(f"data.train_crop={crop!r} does not apply to event frames ({cfg.dataset}): use none "
                         "(data.augment=augment is the DVS recipe's augmentation)")
    crop_pct = cfg.crop_pct if cfg.crop_pct is not None else (224 / 235 if crop == "rrc" else 1.0)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"data.crop_pct={crop_pct} must be in (0, 1]")
    eval_resize = math.floor(size[0] / crop_pct + 1e-6)  # 224 / (224/235) -> 235, not 234
    mix, cut = MIXUP.get(cfg.dataset, (0.5, 0.0))
    classes = cfg.num_classes if cfg.num_classes is not None else CLASSES.get(cfg.dataset)
    if classes is None and cfg.dataset in ("folder", "events"):
        classes = manifest_classes(cfg)
    return Recipe(
        dataset=cfg.dataset, size=size, mean=mean, std=std, crop_pct=crop_pct, eval_resize=eval_resize,
        train_crop=crop, crop_scale=tuple(cfg.crop_scale), crop_ratio=tuple(cfg.crop_ratio),
        crop_padding=int(cfg.crop_padding), hflip=_flip(cfg),
        mixup_alpha=cfg.mixup_alpha if cfg.mixup_alpha is not None else mix,
        cutmix_alpha=cfg.cutmix_alpha if cfg.cutmix_alpha is not None else cut,
        num_classes=classes,
    )
