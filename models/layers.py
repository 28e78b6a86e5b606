"""SpikingResformer blocks on [T, B, C, H, W] tensors, with T folded into the batch for conv/BN.

Module and parameter names follow the official implementation (xyshi2000/SpikingResformer) so that its
checkpoints load unchanged: DSSA has `W`, `norm.bn`, `Wproj`, `norm_proj.bn`, `firing_rate_x`,
`firing_rate_attn`; GWFFN has `up.{0,1,2}`, `conv.0.{0,1,2}`, `down.{0,1,2}`; downsampling has
`activation`, `conv`, `norm.bn`. Folding [T, B] -> [T*B] is a view (no copy), channels-last included.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import spike_conv
from models.neurons import LIF


class Conv2d(nn.Conv2d):
    """nn.Conv2d applied to [T, B, C, H, W] by folding T into the batch (bias off by default).

    `sparse_limits` (set by the model for the convolutions that read spikes, when `sparse_conv` is on):
    on CPU in float32/bfloat16 the event-driven kernel of models/spike_conv.py runs when at most
    `sparse_limits[dtype]` of the input is nonzero (the dense convolution otherwise); None: always dense.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__(cin, cout, k, stride, padding, groups=groups, bias=False)
        self.sparse_limits: dict[torch.dtype, float] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.flatten(0, 1)  # [T*B, C_in, H, W]
        y = self._event_driven(xf) if self.sparse_limits and xf.device.type == "cpu" else None
        if y is None:
            y = super().forward(xf)  # [T*B, C_out, H', W']
        return y.unflatten(0, x.shape[:2])  # [T, B, C_out, H', W']

    def _event_driven(self, xf: torch.Tensor) -> torch.Tensor | None:
        w = self.weight
        if torch.is_autocast_enabled("cpu"):  # a custom op is not autocast: cast as conv2d would
            dt = torch.get_autocast_dtype("cpu")
            xf, w = xf.to(dt), w.to(dt)
        limit = self.sparse_limits.get(xf.dtype)
        if limit is None or w.dtype != xf.dtype or self.dilation != (1, 1):
            return None
        return spike_conv.spike_conv(xf, w, self.stride[0], self.padding[0], self.groups, limit)


class BN(nn.Module):
    """BatchNorm2d over T*B jointly (statistics shared over time steps), stored as `.bn` like the original."""

    def __init__(self, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """x: [T, B, C, H, W]; `repeat` > 1 means x stands for `repeat` identical copies along T."""
        xf = x.flatten(0, 1)  # [T*B, C, H, W]
        if repeat == 1 or not self.training:
            return self.bn(xf).unflatten(0, x.shape[:2])
        return self._repeated(xf, repeat).unflatten(0, x.shape[:2])

    def _repeated(self, xf: torch.Tensor, repeat: int) -> torch.Tensor:
        # Same normalisation as on `repeat` stacked copies (identical batch statistics). The running variance
        # takes the unbiased factor of the stacked count n = repeat * m (m = B * H * W per channel), as BN on
        # the repeated input would: batch_norm updates it with m's factor in the same pass, and the update
        # part is rescaled afterwards (one small op on [C] instead of a second pass over the input).
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        w = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        mean, var = bn.running_mean.clone(), bn.running_var.clone()  # updated by batch_norm, kept by autograd
        y = F.batch_norm(xf, mean, var, bn.weight, bn.bias, True, w, bn.eps)
        m = xf.numel() // xf.shape[1]
        n = repeat * m
        with torch.no_grad():
            kept = bn.running_var * (1.0 - w)  # the old value's share of the update
            bn.running_mean.copy_(mean)
            bn.running_var.copy_((var - kept) * ((n / (n - 1)) / (m / (m - 1))) + kept)
        return y


def _conv_bn(neuron, cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    """neuron -> conv k x k (same padding) -> BN, the official GWFFN sub-block."""
    return nn.Sequential(neuron(), Conv2d(cin, cout, k, padding=k // 2, groups=groups), BN(cout))


class GWFFN(nn.Module):
    """Grouped-wise feed-forward: 1x1 up (x4), grouped 3x3 with inner residual, 1x1 down, residual."""

    def __init__(self, dim: int, group_size: int = 64, neuron=LIF, ratio: int = 4, num_conv: int = 1):
        super().__init__()
        inner = dim * ratio
        self.up = _conv_bn(neuron, dim, inner, 1)
        self.conv = nn.ModuleList([_conv_bn(neuron, inner, inner, 3, groups=inner // group_size)
                                   for _ in range(num_conv)])
        self.down = _conv_bn(neuron, inner, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)  # [T, B, 4C, H, W]
        mid = up
        for m in self.conv:
            mid = m(mid)
        return self.down(mid + up) + x  # [T, B, C, H, W]


class DownsampleLayer(nn.Module):
    """neuron -> conv 3x3 stride 2 -> BN (start of stages 2 and 3)."""

    def __init__(self, cin: int, cout: int, stride: int = 2, neuron=LIF):
        super().__init__()
        self.conv = Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = BN(cout)
        self.activation = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.activation(x)))  # [T, B, C_out, H/2, W/2]


class DSSA(nn.Module):
    """Dual spike self-attention with residual; called once per forward on [T, B, C, H, W]."""

    def __init__(self, dim: int, num_heads: int, length: int, patch_size: int, neuron=LIF,
                 frozen_ema: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"DSSA dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.lenth = dim, num_heads, length  # `lenth`: the original's N'
        self.momentum = 0.999
        self.frozen_ema = frozen_ema
        self.low_precision_ema: bool | None = None  # frozen_ema + autocast: set by the 1st batch
        self.register_buffer("firing_rate_x", torch.zeros(1, 1, num_heads, 1, 1))
        self.register_buffer("firing_rate_attn", torch.zeros(1, 1, num_heads, 1, 1))
        self.register_buffer("rate_seen", torch.zeros((), dtype=torch.bool), persistent=False)
        self.activation_in = neuron()
        self.W = Conv2d(dim, 2 * dim, patch_size, stride=patch_size)
        self.norm = BN(2 * dim)
        self.activation_attn = neuron()
        self.activation_out = neuron()
        self.Wproj = Conv2d(dim, dim, 1)
        self.norm_proj = BN(dim)

    def _apply(self, fn, recurse: bool = True):
        # The rate buffers keep the official 5-D shape [1, 1, h, 1, 1]; `model.to(memory_format=
        # channels_last)` would reject a 5-D tensor, so they are converted as flat views.
        shapes = {n: self._buffers[n].shape for n in ("firing_rate_x", "firing_rate_attn")}
        for n in shapes:
            self._buffers[n] = self._buffers[n].view(-1)
        try:
            return super()._apply(fn, recurse)
        finally:
            for n, s in shapes.items():
                self._buffers[n] = self._buffers[n].view(s)

    def _rate_dtypes(self, x: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        """(dtype of a batch's rate, dtype of the EMA). The buffers' own dtype, except with `frozen_ema` under
        autocast, which reproduces the official code there: its batch rate is a mean of autocast-dtype spikes;
        in a fresh run (buffers all zero at the first training batch) it re-binds each buffer to that rate,
        so the EMA runs in the autocast dtype, where 0.001 steps mostly round away; with loaded buffers
        (transfer, pretrained, and its own resume) the buffer stays float32 and tracks."""
        own = self.firing_rate_x.dtype  # float32 (float64 for a .double() model)
        if not (self.frozen_ema and self.training and torch.is_autocast_enabled(x.device.type)):
            return own, own
        amp = torch.get_autocast_dtype(x.device.type)
        if self.low_precision_ema is None:  # decided once per process: one host read per layer
            fresh = (self.firing_rate_x == 0).all() & (self.firing_rate_attn == 0).all()
            self.low_precision_ema = bool(fresh)
        return amp, amp if self.low_precision_ema else own

    @torch.no_grad()
    def _update_rate(self, buf: torch.Tensor, spikes: torch.Tensor, rate: torch.dtype,
                     ema: torch.dtype) -> None:
        """In-place EMA of the per-head firing rate; the first training batch sets it (as the original).
        Evaluated as the original's `buf * m + r * (1 - m)`: each product and the sum rounded to its dtype."""
        r = spikes.mean((0, 2, 3), dtype=buf.dtype).to(rate).view_as(buf)  # [1, 1, h, 1, 1], no upcast copy
        b = buf.to(ema)
        b = torch.where(~self.rate_seen & (buf == 0).all(), r.to(ema), b)
        buf.copy_(b * self.momentum + r * (1 - self.momentum))

    def _scale(self, buf: torch.Tensor, n: int, dt: torch.dtype) -> torch.Tensor:
        return (buf.to(dt) * n).rsqrt().view(self.num_heads, 1, 1)  # [h, 1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        h, d = self.num_heads, C // self.num_heads
        s = self.activation_in(x)  # [T, B, C, H, W] spikes
        y = self.norm(self.W(s)).flatten(0, 1)  # [T*B, 2C, H', W']
        y = y.reshape(T * B, h, 2 * d, -1)  # [T*B, h, 2d, N']
        y1, y2 = y[:, :, :d], y[:, :, d:]  # [T*B, h, d, N'] each
        sh = s.flatten(0, 1).reshape(T * B, h, d, H * W)  # [T*B, h, d, N]
        rate_dt, dt = self._rate_dtypes(x)
        if self.training:
            self._update_rate(self.firing_rate_x, sh, rate_dt, dt)
        # The attention map is computed transposed ([N, N'] per head, contiguous) and handed on as its
        # [N', N] view: the second matmul then reads it without a copy and its gradient arrives in the same
        # layout (no transposing copy of the largest tensor in the model, forward or backward). Both
        # per-head scales are applied to the small operands y1, y2 rather than to the products, so the
        # attention map and the output keep the matmul dtype (bf16 under autocast) and skip a full pass.
        y1 = y1 * self._scale(self.firing_rate_x, d, dt)
        attn_t = torch.matmul(sh.transpose(-1, -2), y1)  # [T*B, h, N, N'] = (scaled y1^T @ s)^T
        attn = self.activation_attn(attn_t.unflatten(0, (T, B)).transpose(-1, -2))  # [T, B, h, N', N]
        if self.training:
            self._update_rate(self.firing_rate_attn, attn.flatten(0, 1), rate_dt, dt)
            self.rate_seen.fill_(True)
        y2 = y2 * self._scale(self.firing_rate_attn, self.lenth, dt)  # after the rate update, as the original
        # (y2 @ attn)^T = attn^T @ y2^T lands directly in channels-last order [T*B, N, h, d]
        out = torch.matmul(attn.flatten(0, 1).transpose(-1, -2), y2.transpose(-1, -2))  # [T*B, h, N, d]
        out = out.transpose(1, 2).reshape(T * B, H, W, C).permute(0, 3, 1, 2)  # [T*B, C, H, W] (NHWC)
        out = self.activation_out(out.unflatten(0, (T, B)))  # [T, B, C, H, W] spikes
        return self.norm_proj(self.Wproj(out)) + x
