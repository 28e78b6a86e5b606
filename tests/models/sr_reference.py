"""A plain, unoptimised SpikingResformer written from the official code's structure, for the tests.

It works on a state dict with the official names (`prologue.*`, `layers.<stage>.<block>.*`,
`classifier.weight`), repeats static images T times, runs every conv/matmul/neuron step by step in Python
loops and never folds, fuses or broadcasts. BN in train mode uses the statistics of all T*B samples.
`official_shapes` enumerates the official parameter/buffer names and shapes independently of `models`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def official_shapes(arch, num_classes: int, in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official implementation's state dict for an architecture."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{k}"] = (c,)
        shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    def neuron(prefix: str) -> None:
        if arch.neuron == "plif":
            shapes[f"{prefix}.w"] = ()

    c0 = arch.planes[0]
    k = 7 if arch.stem == "imagenet" else 3
    shapes["prologue.0.weight"] = (c0, in_channels, k, k)
    bn("prologue.1", c0)
    for i, (c, h, p, n) in enumerate(zip(arch.planes, arch.heads, arch.patches, arch.blocks)):
        j = 0
        if i > 0:
            neuron(f"layers.{i}.0.activation")
            shapes[f"layers.{i}.0.conv.weight"] = (c, arch.planes[i - 1], 3, 3)
            bn(f"layers.{i}.0.norm", c)
            j = 1
        for _ in range(n):
            d = f"layers.{i}.{j}"
            shapes[f"{d}.firing_rate_x"] = (1, 1, h, 1, 1)
            shapes[f"{d}.firing_rate_attn"] = (1, 1, h, 1, 1)
            for a in ("activation_in", "activation_attn", "activation_out"):
                neuron(f"{d}.{a}")
            shapes[f"{d}.W.weight"] = (2 * c, c, p, p)
            bn(f"{d}.norm", 2 * c)
            shapes[f"{d}.Wproj.weight"] = (c, c, 1, 1)
            bn(f"{d}.norm_proj", c)
            g = f"layers.{i}.{j + 1}"
            for sub, cin, cout, kk, groups in (("up", c, 4 * c, 1, 1), ("conv.0", 4 * c, 4 * c, 3, None),
                                                ("down", 4 * c, c, 1, 1)):
                neuron(f"{g}.{sub}.0")
                cin_g = cin // (4 * c // arch.group_size) if groups is None else cin
                shapes[f"{g}.{sub}.1.weight"] = (cout, cin_g, kk, kk)
                bn(f"{g}.{sub}.2", cout)
            j += 2
    shapes["classifier.weight"] = (num_classes, arch.planes[-1])
    return shapes


def random_official_state(arch, num_classes: int, seed: int = 0, dtype=torch.float32) -> dict:
    """A plausible official-format state dict: random weights, BN stats and firing rates."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in official_shapes(arch, num_classes).items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g, dtype=dtype) * 0.5 + 0.5
        elif name.endswith(("running_mean", ".bias")):
            sd[name] = torch.randn(shape, generator=g, dtype=dtype) * 0.1
        elif name.endswith("bn.weight"):
            sd[name] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        elif "firing_rate" in name:
            sd[name] = torch.rand(shape, generator=g, dtype=dtype) * 0.2 + 0.05
        elif name.endswith(".w"):
            sd[name] = torch.randn(shape, generator=g, dtype=dtype) * 0.3
        else:  # conv / linear weights, scaled like a trained net so that neurons do fire
            fan_in = math.prod(shape[1:])
            sd[name] = torch.randn(shape, generator=g, dtype=dtype) * (2.0 / fan_in) ** 0.5
    return sd


class _SpikeATan(torch.autograd.Function):
    """Heaviside(h - 1) forward; the paper's ATan surrogate (alpha 2) backward."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return (h >= 1.0).to(h.dtype)

    @staticmethod
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        alpha = 2.0
        return g * (alpha / 2) / (1 + (math.pi / 2 * alpha * (h - 1.0)) ** 2)


class Reference:
    """Per-step forward with the official structure; `train` uses batch BN statistics and updates `sd`."""

    def __init__(self, arch, sd: dict, T: int, img_size: int, train: bool = False):
        self.arch, self.sd, self.T, self.train = arch, sd, T, train
        self.img_size = img_size

    def neuron(self, prefix: str, x: torch.Tensor) -> torch.Tensor:  # x: [T, ...]
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            if self.arch.neuron == "plif":
                h = v + (x[t] - v) * torch.sigmoid(self.sd[f"{prefix}.w"])
            else:
                h = v + (x[t] - v) / 2.0
            s = _SpikeATan.apply(h)
            v = h * (1.0 - s.detach())  # detached reset
            out.append(s)
        return torch.stack(out)

    def conv(self, name: str, x: torch.Tensor, stride=1, padding=0, groups=1) -> torch.Tensor:
        w = self.sd[f"{name}.weight"]
        return torch.stack([F.conv2d(x[t], w, None, stride, padding, 1, groups) for t in range(x.shape[0])])

    def bn(self, prefix: str, x: torch.Tensor) -> torch.Tensor:  # x: [T, B, C, H, W]
        p = f"{prefix}.bn"
        w, b = self.sd[f"{p}.weight"], self.sd[f"{p}.bias"]
        if self.train:
            dims = (0, 1, 3, 4)
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            n = x.numel() / x.shape[2]
            m, v = mean.detach(), var.detach()
            self.sd[f"{p}.running_mean"] = 0.9 * self.sd[f"{p}.running_mean"] + 0.1 * m
            self.sd[f"{p}.running_var"] = 0.9 * self.sd[f"{p}.running_var"] + 0.1 * v * n / (n - 1)
        else:
            mean, var = self.sd[f"{p}.running_mean"], self.sd[f"{p}.running_var"]
        shape = (1, 1, -1, 1, 1)
        return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-5) * w.view(shape) + b.view(shape)

    def rate(self, name: str, spikes: torch.Tensor) -> torch.Tensor:  # spikes: [T, B, h, ., .]
        if self.train:
            r = spikes.detach().mean((0, 1, 3, 4), keepdim=True)  # the official code detaches too
            old = self.sd[name]
            base = r if bool(torch.all(old == 0)) else old
            self.sd[name] = base * 0.999 + r * 0.001
        return self.sd[name]

    def dssa(self, d: str, x: torch.Tensor, heads: int, p: int, length: int) -> torch.Tensor:
        T, B, C, H, W = x.shape
        s = self.neuron(f"{d}.activation_in", x)
        y = self.bn(f"{d}.norm", self.conv(f"{d}.W", s, stride=p))
        y = y.reshape(T, B, heads, 2 * C // heads, -1)
        y1, y2 = y[:, :, :, :C // heads], y[:, :, :, C // heads:]
        sh = s.reshape(T, B, heads, C // heads, -1)
        rx = self.rate(f"{d}.firing_rate_x", sh)
        attn = torch.stack([y1[t].transpose(-1, -2) @ sh[t] for t in range(T)])
        attn = self.neuron(f"{d}.activation_attn", attn / torch.sqrt(rx * (C // heads)))
        ra = self.rate(f"{d}.firing_rate_attn", attn)
        out = torch.stack([y2[t] @ attn[t] for t in range(T)]) / torch.sqrt(ra * length)
        out = self.neuron(f"{d}.activation_out", out.reshape(T, B, C, H, W))
        return self.bn(f"{d}.norm_proj", self.conv(f"{d}.Wproj", out)) + x

    def gwffn(self, g: str, x: torch.Tensor) -> torch.Tensor:
        c4 = x.shape[2] * 4
        up = self.bn(f"{g}.up.2", self.conv(f"{g}.up.1", self.neuron(f"{g}.up.0", x)))
        mid = self.conv(f"{g}.conv.0.1", self.neuron(f"{g}.conv.0.0", up), padding=1,
                        groups=c4 // self.arch.group_size)
        mid = self.bn(f"{g}.conv.0.2", mid) + up
        return self.bn(f"{g}.down.2", self.conv(f"{g}.down.1", self.neuron(f"{g}.down.0", mid))) + x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] or [B, T, C, H, W] -> logits [T, B, K]."""
        a = self.arch
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1) if x.dim() == 4 else x.transpose(0, 1)
        imagenet = a.stem == "imagenet"
        x = self.conv("prologue.0", x, stride=2 if imagenet else 1, padding=3 if imagenet else 1)
        x = self.bn("prologue.1", x)
        size = self.img_size
        if imagenet:
            x = torch.stack([F.max_pool2d(x[t], 3, 2, 1) for t in range(self.T)])
            size //= 4
        for i, (h, p, n) in enumerate(zip(a.heads, a.patches, a.blocks)):
            j = 0
            if i > 0:
                s = self.neuron(f"layers.{i}.0.activation", x)
                x = self.bn(f"layers.{i}.0.norm", self.conv(f"layers.{i}.0.conv", s, stride=2, padding=1))
                size //= 2
                j = 1
            for _ in range(n):
                x = self.dssa(f"layers.{i}.{j}", x, h, p, (size // p) ** 2)
                x = self.gwffn(f"layers.{i}.{j + 1}", x)
                j += 2
        feats = x.mean((3, 4))  # [T, B, C]
        return torch.stack([feats[t] @ self.sd["classifier.weight"].t() for t in range(self.T)])
