"""Crop windows computed on the host from (seed, epoch, index): timm's RandomResizedCrop and eval crop."""
from __future__ import annotations

import math
import random
import struct

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's SOF marker, without decoding; ValueError if there is none."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        m = data[i + 1]
        if m in _SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return h, w
        if m == 0xFF or m == 0x01 or 0xD0 <= m <= 0xD8:
            i += 2 if m != 0xFF else 1
            continue
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    raise ValueError("truncated JPEG (no SOF marker)")


def rrc_window(rng: random.Random, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, height, width) exactly as timm/torchvision RandomResizedCrop.get_params."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def sample_window(recipe, train: bool, h: int, w: int, seed: int) -> tuple[int, int, int, int, int]:
    """(top, left, height, width, flip) of one sample, drawn exactly as the torchvision backend's timm
    transform does after `random.seed(seed)` and `torch.manual_seed(seed)` (crop: random, flip: torch)."""
    import torch

    if not train:
        return (*center_window(h, w, recipe.size, recipe.eval_resize), 0)
    if recipe.random_crop:
        t, l, ch, cw = rrc_window(random.Random(seed), h, w, recipe.crop_scale, recipe.crop_ratio)
    else:  # resize only ("pad" shifts the resized batch on the device: stage.pad_crop)
        t, l, ch, cw = 0, 0, h, w
    flip = bool(torch.rand(1, generator=torch.Generator().manual_seed(seed)) < recipe.hflip)
    return t, l, ch, cw, int(flip)


def center_window(h: int, w: int, size: tuple[int, int], resize: int):
    """Source window of timm's eval transform (shorter side -> resize, center crop size)."""
    f = resize / min(h, w)
    ch, cw = min(h, round(size[0] / f)), min(w, round(size[1] / f))
    return (h - ch) // 2, (w - cw) // 2, ch, cw
