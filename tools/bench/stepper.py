"""A plain training step for the benchmarks: forward, loss on the T-mean, backward, AdamW, hook, reset."""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from tools.bench.harness import sync

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synthetic_batch(B: int, C: int, size: int, num_classes: int, device: torch.device,
                    channels_last: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed normalised-image batch [B, C, H, W] and int64 targets [B] (the model's cost ignores pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, size, size, generator=g).to(device)  # [B, C, H, W]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (B,), generator=g).to(device)  # [B]
    return x, y


def trainer_model(cfg, device: torch.device) -> torch.nn.Module:
    """`models.build_model(cfg)` as the trainer builds it for `device` (a GPU: no CPU kernels), on it."""
    from models import build_model

    return build_model(cfg, device).to(device)


def reset(model: torch.nn.Module) -> None:
    """Reset every neuron's state (spikingjelly's reset_net)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


class Stepper:
    """Owns a model, its AdamW and an optional training hook; `step(x, y)` is one optimizer step."""

    def __init__(self, model: torch.nn.Module, *, hook=None, dtype: str = "fp32", lr: float = 1e-3,
                 forward_model: torch.nn.Module | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose from {', '.join(DTYPES)}")
        self.model = model  # the unwrapped model (the hook's view)
        self.fwd = forward_model if forward_model is not None else model  # e.g. torch.compile(model)
        self.hook = hook
        self.dtype = DTYPES[dtype]
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        self.steps = 0
        self.metrics: dict = {}
        self.hook_seconds: list[float] = []  # after_optimizer_step wall time per step (synchronised)

    def _autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward + backward + optimizer step (+ hook) + neuron reset; returns the detached loss."""
        self.model.train()
        with self._autocast(x.device):
            logits = self.fwd(x)  # [T, B, K]
            loss = F.cross_entropy(logits.float().mean(0), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.hook is not None:
            sync(x.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                self.metrics = self.hook.after_optimizer_step(self.model, loss=loss.detach(), epoch=0,
                                                              step=self.steps)
            sync(x.device)
            self.hook_seconds.append(time.perf_counter() - t0)
        reset(self.model)
        self.steps += 1
        return loss.detach()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference forward (eval mode) + reset; returns the T-mean logits."""
        self.model.eval()
        with self._autocast(x.device):
            out = self.fwd(x).mean(0)  # [B, K]
        reset(self.model)
        return out

    def case(self, x: torch.Tensor, y: torch.Tensor, steps: int = 1):
        """A harness case: `steps` training steps; returns the number of steps done."""
        def run() -> int:
            for _ in range(steps):
                self.step(x, y)
            return steps
        return run
