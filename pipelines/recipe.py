"""Per-dataset recipe values (mean/std, eval crop, mixup alphas, classes) resolved from a DataConfig."""
from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Recipe:
    """Resolved values every backend uses."""

    dataset: str
    size: tuple[int, int]  # (H, W) model input
    mean: tuple[float, ...] | None  # None: no normalisation (DVS)
    std: tuple[float, ...] | None
    crop_pct: float
    eval_resize: int  # shorter side before the eval center crop (timm: floor(size / crop_pct))
    random_crop: bool  # RandomResizedCrop (ImageNet-style) or resize only (tiny images)
    mixup_alpha: float
    cutmix_alpha: float
    num_classes: int | None

    @property
    def is_dvs(self) -> bool:
        """Event-frame dataset."""
        return self.dataset in DVS


def resolve(cfg: DataConfig) -> Recipe:
    """Fill the recipe defaults a DataConfig leaves as None."""
    if len(cfg.input_size) != 3:
        raise ValueError(f"data.input_size={cfg.input_size} must be [C, H, W]")
    size = (int(cfg.input_size[1]), int(cfg.input_size[2]))
    dvs = cfg.dataset in DVS
    mean, std = STATS.get(cfg.dataset, (None, None)) if not dvs else (None, None)
    mean = tuple(cfg.mean) if cfg.mean is not None else mean
    std = tuple(cfg.std) if cfg.std is not None else std
    tiny = cfg.dataset in TINY
    crop_pct = cfg.crop_pct if cfg.crop_pct is not None else (1.0 if tiny or dvs else 224 / 235)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"data.crop_pct={crop_pct} must be in (0, 1]")
    eval_resize = math.floor(size[0] / crop_pct + 1e-6)  # 224 / (224/235) -> 235, not 234
    mix, cut = MIXUP.get(cfg.dataset, (0.5, 0.0))
    return Recipe(
        dataset=cfg.dataset, size=size, mean=mean, std=std, crop_pct=crop_pct, eval_resize=eval_resize,
        random_crop=not (tiny or dvs),
        mixup_alpha=cfg.mixup_alpha if cfg.mixup_alpha is not None else mix,
        cutmix_alpha=cfg.cutmix_alpha if cfg.cutmix_alpha is not None else cut,
        num_classes=cfg.num_classes if cfg.num_classes is not None else CLASSES.get(cfg.dataset),
    )
