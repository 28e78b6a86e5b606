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
    # torchvision: DataLoader processes; ffcv: numba threads; dali: DALI threads. auto: the cores each process
    # may use (dassdp-train resolves it: launch.precision.resolve_workers)
    workers: int | Literal["auto"] = "auto"
    input_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # [C, H, W]
    # training crop: rrc = RandomResizedCrop(crop_scale, crop_ratio); pad = CIFAR-style random crop of the
    # resized image padded by crop_padding px (zeros); none = resize only. auto: rrc for imagenet and for
    # `folder` images larger than 64 px, none for the small-image datasets and small `folder` images
    train_crop: Literal["auto", "rrc", "pad", "none"] = "auto"
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # rrc area fraction [lo, hi]
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # rrc aspect ratio [lo, hi]
    crop_padding: int = 4  # pad: pixels on each side
    hflip: Literal["auto"] | bool | float = "auto"  # probability; true = 0.5; auto: 0.5 (images), 0 (DVS)
    augment: str | None = None  # timm RandAugment string, "augment" (DVS recipe) or None
    mixup: bool = False  # mixup/cutmix with the per-dataset recipe alphas
    mixup_alpha: float | None = None  # None: recipe value for the dataset
    cutmix_alpha: float | None = None
    mixup_switch_prob: float = 0.5
    cutout: bool = False  # random erasing (re_prob 0.25, const)
    label_smoothing: float = 0.0
    crop_pct: float | None = None  # eval resize = size / crop_pct; None: recipe value (follows train_crop)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"  # torchvision, DALI on CUDA (docs/pipelines.md)
    mean: list[float] | None = None  # None: recipe value for the dataset
    std: list[float] | None = None
    os_cache: bool = True  # ffcv: page cache (True) or process memory (False)
    order: Literal["random", "quasi_random", "sequential"] = "random"  # train sample order (all backends)
    drop_last: bool = True  # training batches only
    num_classes: int | None = None  # None: the dataset's, or for "folder"/"events" the manifest's

    def check(self) -> None:
        """Reject values no backend can use (ValueError naming the key)."""
        lo, hi = (list(self.crop_scale) + [None, None])[:2]
        checks = [
            (self.workers == "auto" or self.workers >= 0, "data.workers", self.workers, "0 or more, or auto"),
            (len(self.crop_scale) == 2 and 0 < lo <= hi <= 1, "data.crop_scale", self.crop_scale,
             "[lo, hi] with 0 < lo <= hi <= 1"),
            (len(self.crop_ratio) == 2 and 0 < self.crop_ratio[0] <= self.crop_ratio[-1], "data.crop_ratio",
             self.crop_ratio, "[lo, hi] with 0 < lo <= hi"),
            (self.crop_padding >= 0, "data.crop_padding", self.crop_padding, "0 or more"),
            (self.hflip in ("auto", True, False) or 0 <= self.hflip <= 1, "data.hflip", self.hflip,
             "auto, true, false or a probability in [0, 1]"),
        ]
        for ok, key, value, what in checks:
            if not ok:
                raise ValueError(f"{key}={value!r} must be {what}")
