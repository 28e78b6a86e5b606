"""Synaptic operations, MACs, energy and firing rates of a SpikingResformer, counted the paper's way.

SOPs are counted on the real spike inputs of every convolution, linear layer and DSSA matmul except the
stem convolution and the classifier (`model.skip`): a conv's SOPs are the sum of conv2d(spikes, ones),
i.e. every input spike times its real fan-out (borders included); DSSA's first matmul costs N' per input
spike, the second d = C/heads per attention spike. SOPs are per image summed over all T steps; MACs are per
image per time step and include every conv, linear and matmul. Energy: 0.9 pJ per SOP, 4.6 pJ per MAC for
the ANN equivalent. `python -m models.sops --model NAME` prints the table.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based.functional import reset_net
from spikingjelly.activation_based.neuron import BaseNode

from models.layers import DSSA

SOP_PJ = 0.9  # pJ per synaptic operation (accumulate)
MAC_PJ = 4.6  # pJ per multiply-accumulate (ANN equivalent)


class _Counter:
    """Forward hooks that add up MACs, SOPs and spike counts per layer."""

    def __init__(self, model: nn.Module, count_sops: bool):
        self.model, self.count_sops = model, count_sops
        self.skip = set(getattr(model, "skip", ()))
        self.rows: dict[str, dict] = {}
        self.rates: dict[str, float] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self.handles.append(m.register_forward_hook(self._synapse(name)))
            elif isinstance(m, DSSA):
                self.handles.append(m.activation_in.register_forward_hook(self._matmul(name, m, 1)))
                self.handles.append(m.activation_attn.register_forward_hook(self._matmul(name, m, 2)))
            if isinstance(m, BaseNode) and count_sops:
                self.handles.append(m.register_forward_hook(self._rate(name)))

    def _add(self, name: str, kind: str, macs: float, sops: float | None, rate: float | None) -> None:
        row = self.rows.setdefault(name, {"name": name, "kind": kind, "macs": 0.0, "sops": 0.0,
                                          "input_rate": rate, "skipped": name in self.skip})
        row["macs"] += macs
        if sops is not None and name not in self.skip:
            row["sops"] += sops

    def _synapse(self, name: str):
        def hook(m, inputs, out):
            x = inputs[0]  # [T, B, C, H, W] or [T, B, C] (linear)
            images = x.shape[0] * x.shape[1]  # T*B image-steps
            fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features
            macs = out.numel() / images * fan_in
            sops = rate = None
            if self.count_sops and name not in self.skip:
                with torch.no_grad():
                    xs = x.detach().float()
                    if isinstance(m, nn.Conv2d):
                        ones = torch.ones_like(m.weight, dtype=torch.float32)
                        fan = F.conv2d(xs.flatten(0, 1), ones, None, m.stride, m.padding, m.dilation,
                                       m.groups)
                    else:
                        fan = F.linear(xs, torch.ones_like(m.weight, dtype=torch.float32))
                    sops = fan.sum().item() / x.shape[1]
                    rate = xs.mean().item()
            self._add(name, "conv" if isinstance(m, nn.Conv2d) else "linear", macs, sops, rate)
        return hook

    def _matmul(self, name: str, dssa: DSSA, which: int):
        def hook(m, inputs, spikes):
            T, B = spikes.shape[:2]
            if which == 1:  # spikes: s [T, B, C, H, W]; attn = y1^T @ s, y1^T is [N', d]
                C, N = spikes.shape[2], spikes.shape[3] * spikes.shape[4]
                n_rows, macs = dssa.lenth, dssa.lenth * C * N
            else:  # spikes: attn [T, B, h, N', N] (stored transposed); out = y2 @ attn, y2 is [d, N']
                h, n_prime, N = spikes.shape[2:]
                n_rows, macs = dssa.dim // dssa.num_heads, dssa.dim * n_prime * N
            sops = rate = None
            if self.count_sops:
                total = spikes.detach().float().sum().item()
                sops, rate = n_rows * total / B, total / spikes.numel()
            self._add(f"{name}.matmul{which}", "matmul", macs, sops, rate)
        return hook

    def _rate(self, name: str):
        def hook(m, inputs, out):
            self.rates[name] = out.detach().float().mean().item()
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextmanager
def _counting(model: nn.Module, count_sops: bool):
    c = _Counter(model, count_sops)
    try:
        yield c
    finally:
        c.remove()


def _summary(c: _Counter, T: int) -> dict:
    rows = list(c.rows.values())
    sops, macs = sum(r["sops"] for r in rows), sum(r["macs"] for r in rows)
    return {"T": T, "sops": sops, "macs": macs, "energy_mj": sops * SOP_PJ * 1e-9,
            "ann_energy_mj": macs * MAC_PJ * 1e-9, "layers": rows, "firing_rates": dict(c.rates)}


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor) -> dict:
    """Run `images` ([B,C,H,W] or [B,T,C,H,W]) in eval mode; SOPs per image (all steps), MACs per step."""
    was_training = model.training
    model.eval()
    reset_net(model)
    try:
        with _counting(model, count_sops=True) as c:
            model(images)
        return _summary(c, model.T)
    finally:
        reset_net(model)
        model.train(was_training)


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor) -> None:
    """Untrained weights: set BN running stats and DSSA firing rates from one train-mode pass on `images`."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    was_training = model.training
    model.train()
    try:
        model(images)
    finally:
        reset_net(model)
        model.train(was_training)
        for m, mom in zip(bns, saved):
            m.momentum = mom


def count_macs(name: str, img_size: int | None = None, **kwargs) -> dict:
    """MACs per image per time step of a registered variant, on the meta device (no memory, no SOPs)."""
    from models.spikingresformer import ARCHS, create

    size = img_size or ARCHS[name].img_size
    with torch.device("meta"):
        model = create(name, T=1, img_size=size, **kwargs).eval()
        with torch.no_grad(), _counting(model, count_sops=False) as c:
            model(torch.empty(1, kwargs.get("in_channels") or 3, size, size))
    return _summary(c, 1)


def format_table(result: dict) -> str:
    """A readable table: per-layer MACs, SOPs and input firing rate, then totals and energy."""
    lines = [f"{'layer':<34}{'kind':<8}{'MACs/step (M)':>15}{'SOPs (M)':>12}{'in rate':>9}"]
    for r in result["layers"]:
        sops = "skip" if r["skipped"] else f"{r['sops'] / 1e6:.2f}"
        rate = "" if r["input_rate"] is None else f"{r['input_rate']:.3f}"
        lines.append(f"{r['name']:<34}{r['kind']:<8}{r['macs'] / 1e6:>15.2f}{sops:>12}{rate:>9}")
    rates = list(result["firing_rates"].items())
    if rates:
        lines.append("neuron firing rates (spikes per neuron per step):")
        for i in range(0, len(rates), 3):
            lines.append("  " + "".join(f"{k:<30}{v:>7.3f}   " for k, v in rates[i:i + 3]).rstrip())
    lines.append(f"T={result['T']}  MACs/image/step {result['macs'] / 1e9:.3f} G  "
                 f"SOPs/image {result['sops'] / 1e9:.3f} G  SNN energy {result['energy_mj']:.3f} mJ "
                 f"({SOP_PJ} pJ/SOP)  ANN energy "
                 f"{result['ann_energy_mj']:.3f} mJ ({MAC_PJ} pJ/MAC)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: build a variant (optionally load weights), run random or given images, print the table."""
    import models

    p = argparse.ArgumentParser(description="SOPs, energy and firing rates of a SpikingResformer")
    p.add_argument("--model", default="spikingresformer_tiny", help=f"one of {models.list_models()}")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--weights", default=None, help="checkpoint to load (official, ours or safetensors); "
                   "without it the random model is calibrated on the random batch")
    p.add_argument("--macs-only", action="store_true", help="analytic MACs on the meta device only")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.model not in models.ARCHS:
        p.error(f"--model {a.model!r} is unknown; choose one of {models.list_models()}")
    if a.macs_only:
        print(format_table(count_macs(a.model, a.img_size, num_classes=a.num_classes)))
        return 0
    model = models.create(a.model, T=a.T, img_size=a.img_size, num_classes=a.num_classes)
    size = a.img_size or models.ARCHS[a.model].img_size
    torch.manual_seed(a.seed)
    images = torch.randn(a.batch, 3, size, size)
    if a.weights:
        print(models.load_weights(model, a.weights).summary())
    else:
        print("# untrained weights: BN statistics and firing-rate buffers calibrated on the random batch")
        calibrate(model, images)
    print(format_table(measure(model, images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
