"""Device stage: uint8 batch -> float, RandAugment, normalise, random erasing, mixup; channels-last."""
from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing

from pipelines.config import DataConfig
from pipelines.recipe import Recipe


class DeviceStage:
    """Everything after decode, on the training device, batched; randomness from one seed per batch."""

    def __init__(self, recipe: Recipe, cfg: DataConfig, train: bool, device: torch.device):
        self.recipe, self.train, self.device = recipe, train, device
        self.randaug = None
        self.dvs_augment = train and recipe.is_dvs and cfg.augment is not None
        if train and cfg.augment and not recipe.is_dvs:
            from pipelines.randaugment import BatchRandAugment

            self.randaug = BatchRandAugment(cfg.augment, fill=recipe.mean or (0.5, 0.5, 0.5))
        self.mean = self.std = None
        if recipe.mean is not None:
            self.mean = torch.tensor(recipe.mean, device=device).view(1, -1, 1, 1) * 255
            self.std = torch.tensor(recipe.std, device=device).view(1, -1, 1, 1) * 255
        self.erase = None
        if train and cfg.cutout:
            self.erase = RandomErasing(0.25, mode="const", max_count=1, device=str(device))
        self.pad = recipe.crop_padding if train and recipe.train_crop == "pad" else 0
        self.mixup = None
        if train and cfg.mixup:
            if recipe.num_classes is None:
                raise ValueError("data.mixup needs data.num_classes (or a dataset with a known class count)")
            if cfg.batch_size % 2:
                raise ValueError(f"data.batch_size={cfg.batch_size} must be even with data.mixup (timm)")
            self.mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                               switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                               num_classes=recipe.num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Finish one batch on the device."""
        from pipelines.base import seeded_python_random

        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True).long()
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self._seed = seed
        if x.dim() == 5:  # [B, T, 2, H, W] event frames
            x = self._frames(x, gen)
        elif x.dtype == torch.uint8:
            x = self._images(x, gen, seed)
        if self.pad and x.dim() == 4:  # after normalising: every backend pads the same normalised black
            fill = -self.mean / self.std if self.mean is not None else torch.zeros(1, 1, 1, 1)
            x = pad_crop(x, self.pad, fill.to(x.device), torch.Generator().manual_seed(seed ^ 0x9A))
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()
        if self.mixup is not None:
            with seeded_python_random(seed ^ 0x3C):
                x, y = self.mixup(x, y)
        return x, y

    def _images(self, x: torch.Tensor, gen: torch.Generator, seed: int) -> torch.Tensor:
        from pipelines.base import seeded_python_random

        if self._cpu_fast(x):  # one pass uint8 -> normalised float (torch needs 3 passes: ~6x slower here)
            return self._lut_normalise(x)
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)  # [B, 3, H, W] view of NHWC memory = channels-last
        x = x.float()  # keeps the channels-last strides
        if self.randaug is not None:
            x = self.randaug(x, gen)
        if self.mean is not None:
            x = x.sub_(self.mean).div_(self.std)
        if self.erase is not None:
            with seeded_python_random(seed ^ 0x5E):
                x = self.erase(x)
        return x

    def _cpu_fast(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and self.randaug is None and self.mean is not None and x.dim() == 4
                and x.shape[-1] == 3 and x.is_contiguous())

    def _lut_normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] channels-last, normalised through a [3, 256] table."""
        from pipelines.fastops import lut_nhwc

        if not hasattr(self, "_lut"):
            v = torch.arange(256, dtype=torch.float32).view(1, 256)
            self._lut = ((v - self.mean.view(3, 1)) / self.std.view(3, 1)).numpy()  # [3, 256]
        out = torch.empty(x.shape, dtype=torch.float32)
        lut_nhwc(x.numpy(), self._lut, out.numpy())
        x = out.permute(0, 3, 1, 2)  # [B, 3, H, W] view, channels-last memory
        if self.erase is not None:
            from pipelines.base import seeded_python_random

            with seeded_python_random(self._seed ^ 0x5E):
                x = self.erase(x)
        return x

    def _frames(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        from pipelines.dvs_augment import dvs_augment

        B, T = x.shape[:2]
        x = x.float()  # [B, T, 2, H, W]
        if tuple(x.shape[-2:]) != self.recipe.size:  # resize to the model input, bilinear (torchvision)
            x = torch.nn.functional.interpolate(x.flatten(0, 1), size=self.recipe.size, mode="bilinear",
                                                antialias=True, align_corners=False)
            x = x.view(B, T, 2, *self.recipe.size)
        if self.dvs_augment:
            x = dvs_augment(x, gen)
        return torch.cat([x, x.sum(2, keepdim=True)], 2)  # [B, T, 3, H, W]: third channel = pos + neg


def pad_crop(x: torch.Tensor, pad: int, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CIFAR-style random crop: each image [B, C, H, W] padded by `pad` px of `fill` ([1, C, 1, 1]) and
    cropped back to H x W at a random offset (torchvision RandomCrop(size, padding=pad))."""
    B, C, H, W = x.shape
    padded = fill.to(x.dtype).expand(B, C, H + 2 * pad, W + 2 * pad).clone()  # [B, C, H+2p, W+2p]
    padded[:, :, pad:pad + H, pad:pad + W] = x
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=gen).tolist()  # (top, left) per image
    out = torch.empty_like(x)  # keeps x's memory format (channels-last)
    for i, (t, left) in enumerate(offsets):
        out[i] = padded[i, :, t:t + H, left:left + W]
    return out
