"""timm RandAugment (config-string semantics) batched in torch: per-sample ops on the device.

Input/output: float [B, 3, H, W] in 0..255 (rounded to integers after every op, as PIL's uint8 images).
Each of n layers picks one op per sample uniformly (with replacement), applies it with probability p, at a
magnitude ~ N(m, mstd) clipped to [0, mmax] (mstd > 100: uniform [0, m]); signs are random per sample.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
              "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
PLAIN = [n.replace("Increasing", "") for n in INCREASING]


def parse(config: str) -> dict:
    """timm's `rand-m9-n3-mstd0.5-inc1` string -> dict(m, n, p, mstd, mmax, inc)."""
    parts = config.split("-")
    if parts[0] != "rand":
        raise ValueError(f"data.augment={config!r}: only timm RandAugment strings ('rand-...') are supported")
    out = dict(m=10.0, n=2, p=0.5, mstd=0.0, mmax=10.0, inc=False)
    casts = {"m": float, "n": int, "p": float, "mstd": float, "mmax": float, "inc": lambda v: bool(int(v))}
    for c in parts[1:]:
        m = re.fullmatch(r"([a-z]+)(\d.*)", c)
        if not m or m.group(1) not in casts:
            raise ValueError(f"data.augment={config!r}: section {c!r} is not one of m, n, p, mstd, mmax, inc")
        out[m.group(1)] = casts[m.group(1)](m.group(2))
    if out["mstd"] > 100:
        out["mstd"] = math.inf
    return out


def _grey(x):  # PIL "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
    return torch.floor((x[:, 0] * 19595 + x[:, 1] * 38470 + x[:, 2] * 7471 + 32768) / 65536).unsqueeze(1)


def _blend(degenerate, x, f):
    return degenerate + f.view(-1, 1, 1, 1) * (x - degenerate)


def _equalize(x):
    B, C, H, W = x.shape
    v = x.round().long().clamp(0, 255).flatten(2)  # [B, C, HW]
    hist = torch.zeros(B, C, 256, device=x.device).scatter_add_(2, v, torch.ones_like(v, dtype=torch.float))
    last = torch.where(hist > 0, torch.arange(256, device=x.device), -1).amax(2, keepdim=True)
    step = torch.floor((hist.sum(2, keepdim=True) - hist.gather(2, last.clamp(min=0))) / 255)  # [B, C, 1]
    lut = torch.floor((torch.floor(step / 2) + hist.cumsum(2) - hist) / step.clamp(min=1)).clamp(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device, dtype=torch.float))
    return lut.gather(2, v).view(B, C, H, W)


def _autocontrast(x):
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    scale = 255 / (hi - lo).clamp(min=1)
    return torch.where(hi > lo, torch.floor((x - lo) * scale).clamp(0, 255), x)


def _sharpen_base(x):
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    B, C, H, W = x.shape
    smooth = F.conv2d(x.reshape(B * C, 1, H, W), k.view(1, 1, 3, 3)).view(B, C, H - 2, W - 2)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = smooth.round()
    return out


def _affine(x, M, fill):
    """PIL Image.transform(AFFINE, M) with bicubic resampling; M [n, 2, 3] maps output to input pixels."""
    n, _, H, W = x.shape
    N = torch.tensor([[2 / W, 0, -1], [0, 2 / H, -1], [0, 0, 1]], dtype=x.dtype, device=x.device)
    M3 = torch.cat([M, torch.tensor([0, 0, 1.0], device=x.device).expand(n, 1, 3)], 1)
    theta = (N @ M3 @ torch.linalg.inv(N))[:, :2]
    grid = F.affine_grid(theta, [n, 3, H, W], align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="nearest", align_corners=False) > 0.5
    return torch.where(inside, out, fill.view(1, 3, 1, 1))


def _geometric(name, x, level, sign, fill):
    n, _, H, W = x.shape
    one, zero = torch.ones_like(level), torch.zeros_like(level)
    if name == "Rotate":
        a = -torch.deg2rad(level / 10 * 30 * sign)
        cx, cy = W / 2, H / 2
        c, s = torch.cos(a), torch.sin(a)
        rows = [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy]
    elif name in ("ShearX", "ShearY"):
        f = level / 10 * 0.3 * sign
        rows = [one, f, zero, zero, one, zero] if name == "ShearX" else [one, zero, zero, f, one, zero]
    else:
        pct = level / 10 * 0.45 * sign
        rows = [one, zero, pct * W, zero, one, zero] if name == "TranslateXRel" else \
            [one, zero, zero, zero, one, pct * H]
    return _affine(x, torch.stack(rows, 1).view(n, 2, 3), fill)


def apply_op(name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, fill: torch.Tensor):
    """One timm op on a batch at per-sample levels (0..mmax) and signs (+-1)."""
    inc = name.endswith("Increasing")
    base = name.replace("Increasing", "")
    if base in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        return _geometric(base, x, level, sign, fill)
    if base == "AutoContrast":
        return _autocontrast(x)
    if base == "Equalize":
        return _equalize(x)
    if base == "Invert":
        return 255 - x
    lv = level.view(-1, 1, 1, 1) / 10
    if base == "Posterize":
        bits = (lv * 4).floor()
        bits = 4 - bits if inc else bits
        q = torch.pow(2.0, 8 - bits)
        return torch.where(bits >= 8, x, torch.floor(x / q) * q)
    if base == "Solarize":
        th = torch.clamp((lv * 256).floor(), max=256)
        th = 256 - th if inc else th
        return torch.where(x >= th, 255 - x, x)
    if base == "SolarizeAdd":
        add = torch.clamp((lv * 110).floor(), max=128)
        return torch.where(x < 128, (x + add).clamp(max=255), x)
    f = (1 + level / 10 * 0.9 * sign).clamp(min=0.1) if inc else level / 10 * 1.8 + 0.1
    if base == "Color":
        return _blend(_grey(x).expand_as(x), x, f)
    if base == "Contrast":
        return _blend(torch.floor(_grey(x).mean((2, 3), keepdim=True) + 0.5), x, f)
    if base == "Brightness":
        return _blend(torch.zeros_like(x), x, f)
    if base == "Sharpness":
        return _blend(_sharpen_base(x), x, f)
    raise ValueError(f"unknown RandAugment op {name!r}")


class BatchRandAugment:
    """Batched, seeded RandAugment on [B, 3, H, W] float 0..255."""

    def __init__(self, config: str, fill=(0.485, 0.456, 0.406)):
        self.cfg = parse(config)
        self.ops = INCREASING if self.cfg["inc"] else PLAIN
        self.fill = [round(255 * f) for f in fill]  # timm: img_mean as an integer colour

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        B, dev = x.shape[0], x.device
        fill = torch.tensor(self.fill, dtype=x.dtype, device=dev)
        c = self.cfg
        for _ in range(c["n"]):
            op = torch.randint(len(self.ops), (B,), generator=gen, device=dev)
            on = torch.rand(B, generator=gen, device=dev) < c["p"]
            if math.isinf(c["mstd"]):
                mag = torch.rand(B, generator=gen, device=dev) * c["m"]
            else:
                mag = c["m"] + c["mstd"] * torch.randn(B, generator=gen, device=dev)
            mag = mag.clamp(0, c["mmax"])
            sign = torch.where(torch.rand(B, generator=gen, device=dev) > 0.5, -1.0, 1.0)
            for k, name in enumerate(self.ops):
                sel = torch.nonzero(on & (op == k)).flatten()
                if len(sel):
                    x[sel] = apply_op(name, x[sel], mag[sel], sign[sel], fill).round_().clamp_(0, 255)
        return x
