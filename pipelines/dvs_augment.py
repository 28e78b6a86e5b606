"""The recipe's DVS augmentation, batched on the device: hflip p=0.5, then one of roll / rotate / cutout.

Per sample, identical for all T frames of that sample (the official `Augment` of the DVS training script).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dvs_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x [B, T, C, H, W] float -> augmented copy; randomness drawn from `gen` (one draw set per sample)."""
    B, T, C, H, W = x.shape
    dev = x.device
    u = torch.rand(B, 6, generator=gen, device=dev)  # flip, choice, roll dx, roll dy, angle, unused
    cut = torch.rand(B, 2, generator=gen, device=dev)
    flip = (u[:, 0] < 0.5).view(B, 1, 1, 1, 1)
    x = torch.where(flip, x.flip(-1), x)
    choice = (u[:, 1] * 3).long().clamp_(max=2)  # 0 roll, 1 rotate, 2 cutout
    out = x.clone()
    # roll: integer shifts up to 1/3 of the size along each axis, circular
    r = torch.nonzero(choice == 0).flatten()
    if len(r):
        dx = (u[r, 2] * (2 * (W // 3) + 1)).long() - W // 3  # uniform integer in [-W//3, W//3]
        dy = (u[r, 3] * (2 * (H // 3) + 1)).long() - H // 3
        cols = (torch.arange(W, device=dev).view(1, W) - dx.view(-1, 1)) % W  # [n, W]
        rows = (torch.arange(H, device=dev).view(1, H) - dy.view(-1, 1)) % H  # [n, H]
        xs = x[r]
        xs = torch.gather(xs, 4, cols.view(-1, 1, 1, 1, W).expand(-1, T, C, H, W))
        out[r] = torch.gather(xs, 3, rows.view(-1, 1, 1, H, 1).expand(-1, T, C, H, W))
    # rotate: uniform +-30 degrees about the centre, nearest, zeros outside (torchvision F.rotate defaults)
    r = torch.nonzero(choice == 1).flatten()
    if len(r):
        a = (u[r, 4] * 2 - 1) * math.radians(30)
        cos, sin = torch.cos(a), torch.sin(a)
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                             torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1)  # [n, 2, 3]
        grid = F.affine_grid(theta, [len(r), T * C, H, W], align_corners=False)
        out[r] = F.grid_sample(x[r].flatten(1, 2), grid, mode="nearest", align_corners=False
                               ).view(len(r), T, C, H, W)
    # cutout: one square hole of 1/3 x 1/3 of the size, centre uniform (clipped at the border)
    r = torch.nonzero(choice == 2).flatten()
    if len(r):
        ch, cw = H // 3, W // 3
        cy = (cut[r, 0] * H).long().view(-1, 1, 1)
        cx = (cut[r, 1] * W).long().view(-1, 1, 1)
        yy = torch.arange(H, device=dev).view(1, H, 1)
        xx = torch.arange(W, device=dev).view(1, 1, W)
        hole = ((yy - cy).abs() * 2 < ch) & ((xx - cx).abs() * 2 < cw)  # [n, H, W]
        out[r] = x[r] * (~hole).view(-1, 1, 1, H, W)
    return out
