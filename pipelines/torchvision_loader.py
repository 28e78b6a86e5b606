"""torchvision backend: the original recipe exactly (timm transforms on PIL), the parity reference."""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as tvt

from pipelines.base import DataError, Loader
from pipelines.sources import open_source


def build_transform(recipe, cfg, train: bool):
    """timm's transform for the recipe: RandomResizedCrop (`rrc`) or resize only (`none`, `pad`: the device
    stage shifts the batch), then flip; eval: timm's resize + center crop (`crop_pct`)."""
    if not train or recipe.random_crop:
        return create_transform(recipe.size, is_training=train, auto_augment=cfg.augment if train else None,
                                interpolation=cfg.interpolation, mean=recipe.mean, std=recipe.std,
                                crop_pct=recipe.crop_pct, scale=recipe.crop_scale, ratio=recipe.crop_ratio,
                                hflip=recipe.hflip, re_prob=0.25 if (train and cfg.cutout) else 0.0,
                                re_mode="const", re_count=1,
                                color_jitter=None)  # timm's default 0.4 jitter only acts without RandAugment,
        # which the recipe always sets; off so that augment=None means crop + flip in every backend
    modes = tvt.InterpolationMode
    interp = modes.BICUBIC if cfg.interpolation == "bicubic" else modes.BILINEAR
    ops = [tvt.Resize(recipe.size, interpolation=interp), tvt.RandomHorizontalFlip(recipe.hflip)]
    if cfg.augment:
        hp = dict(translate_const=int(recipe.size[0] * 0.45),
                  img_mean=tuple(round(255 * m) for m in recipe.mean), interpolation=_pil(cfg.interpolation))
        ops.append(rand_augment_transform(cfg.augment, hp))
    ops += [tvt.ToTensor(), tvt.Normalize(recipe.mean, recipe.std)]
    if cfg.cutout:
        ops.append(RandomErasing(0.25, mode="const", max_count=1, device="cpu"))
    return tvt.Compose(ops)


def _pil(name: str):
    from PIL import Image

    return Image.BICUBIC if name == "bicubic" else Image.BILINEAR


class _Dataset(torch.utils.data.Dataset):
    """Item (index, seed) -> (image tensor, label); all randomness seeded per sample."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source.labels)

    def __getitem__(self, item):
        i, seed = item
        try:
            img = self.source.image(i)
        except Exception as e:  # noqa: BLE001 - any decode failure becomes one clear error
            raise DataError(f"sample {i} ({self.source.name(i)}) cannot be read: {e}") from e
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        return self.transform(img), int(self.source.labels[i])


class TorchvisionLoader(Loader):
    """Reads the original releases with a torch DataLoader; the augmentation runs in its workers."""

    def _read_labels(self) -> np.ndarray:
        self.source = open_source(self.cfg.dataset, self.cfg.path, self.split)
        self.transform = build_transform(self.recipe, self.cfg, self.train)
        self._sampler, self._dl = _Sampler(), None
        return self.source.labels

    def _batches(self, order: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._sampler.items = list(zip(order.tolist(), self.sample_seeds(order).tolist()))
        if self._dl is None:  # one DataLoader: persistent workers; the sampler runs in this process
            w = self.workers
            self._dl = torch.utils.data.DataLoader(
                _Dataset(self.source, self.transform), batch_size=self.batch_size, sampler=self._sampler,
                num_workers=w, pin_memory=self.device.type == "cuda", persistent_workers=w > 0,
                prefetch_factor=4 if w > 0 else None)
        try:
            yield from self._dl
        except DataError as e:  # torch re-raises a worker's error with the worker's traceback as its text
            last = str(e).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None


class _Sampler(torch.utils.data.Sampler):
    """Yields the (index, seed) items of the current epoch (set by the loader before each iteration)."""

    items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
