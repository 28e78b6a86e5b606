"""DataConfig: where the data is and how batches are made (owned by `pipelines/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    """Dataset, loader backend and the recipe's augmentations."""

    dataset: Literal[
        "imagenet", "cifar10", "cifar100", "cifar10dvs", "dvs128gesture", "fashion_mnist", "folder", "events"
    ] = "imagenet"  # "events": any tree converted by `dassdp-convert events` (backend dvs, DVS recipe)
    backend: Literal["torchvision", "ffcv", "dali", "dvs"] = "torchvision"
    path: str = "./datasets"  # source tree (torchvision) or converted folder (ffcv/dali/dvs)
    batch_size: int = 32  # per process
    workers: int = 8  # torchvision: DataLoader processes; ffcv: numba threads; dali: DALI threads
    input_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # [C, H, W]
    augment: str | None = None  # timm RandAugment string, "augment" (DVS recipe) or None
    mixup: bool = False  # mixup/cutmix with the per-dataset recipe alphas
    mixup_alpha: float | None = None  # None: recipe value for the dataset
    cutmix_alpha: float | None = None
    mixup_switch_prob: float = 0.5
    cutout: bool = False  # random erasing (re_prob 0.25, const)
    label_smoothing: float = 0.0
    crop_pct: float | None = None  # eval resize = size / crop_pct; None: recipe value
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    mean: list[float] | None = None  # None: recipe value for the dataset
    std: list[float] | None = None
    os_cache: bool = True  # ffcv: page cache (True) or process memory (False)
    order: Literal["random", "quasi_random", "sequential"] = "random"  # train sample order (all backends)
    drop_last: bool = True  # training batches only
    num_classes: int | None = None  # "folder": None means read from the manifest; "events": must be set
