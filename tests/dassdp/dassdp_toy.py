"""A tiny spiking model exposing `dassdp_sites()` with the contract's shapes, and a tiny training loop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron, surrogate
from torch import nn


class ToyBlock(nn.Module):
    """Residual block [T,B,C,H,W] -> [T,B,C,H,W] with a 1x1 projection `Wproj` (like a DSSA's)."""

    def __init__(self, C: int):
        super().__init__()
        self.lif = neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m",
                                  surrogate_function=surrogate.ATan())
        self.Wproj = nn.Conv2d(C, C, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        s = self.lif(x)  # [T,B,C,H,W]
        return self.Wproj(s.flatten(0, 1)).unflatten(0, (T, B)) + x  # [T,B,C,H,W]


class ToySpiking(nn.Module):
    """Input [B,T,3,H,W] (frames) or [B,3,H,W] (static); returns per-step logits [T,B,K]."""

    def __init__(self, C: int = 8, K: int = 5, T: int = 4):
        super().__init__()
        self.T = T
        self.stem = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.lif = neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m",
                                  surrogate_function=surrogate.ATan())
        self.layers = nn.Sequential(ToyBlock(C), ToyBlock(C))
        self.classifier = nn.Linear(C, K, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(1).expand(-1, self.T, -1, -1, -1)  # [B,T,3,H,W]
        B, T = x.shape[:2]
        y = self.stem(x.transpose(0, 1).flatten(0, 1)).unflatten(0, (T, B))  # [T,B,C,H,W]
        y = self.layers(self.lif(y) + 0.5 * y - 0.4)  # [T,B,C,H,W], shifted: sparse signs
        return self.classifier(y.mean((3, 4)) + 0.4)  # [T,B,K]

    def dassdp_sites(self) -> dict[str, tuple[str, str, str]]:
        """The contract's two sites."""
        return {"classifier": ("classifier", "linear", "weight"),
                "first_last_stage_dssa": ("layers.1", "block", "Wproj.weight")}


def make_batches(n: int, B: int = 6, T: int = 4, K: int = 5, seed: int = 0, hw: int = 3):
    """n deterministic (images [B,T,3,hw,hw], targets [B]) batches."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, T, 3, hw, hw, generator=g), torch.randint(0, K, (B,), generator=g))
            for _ in range(n)]


def train_steps(model, opt, hook, batches, steps, *, steps_per_epoch: int = 1000, call_hook=True):
    """Run optimizer steps `steps` (global indices) of the toy loop; returns the hook metrics of each step."""
    out = []
    model.train()
    for step in steps:
        x, y = batches[step]
        loss = F.cross_entropy(model(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hook is not None and call_hook:
            with torch.no_grad():
                out.append(hook.after_optimizer_step(model, loss=loss.detach(),
                                                     epoch=step // steps_per_epoch, step=step))
        sj_functional.reset_net(model)
    return out


def build(seed: int = 0, **kw) -> ToySpiking:
    """A toy model with fixed initial weights."""
    torch.manual_seed(seed)
    return ToySpiking(**kw)
