"""Builders that turn config sections into the training parts (each gets only its own sub-config)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from launch.config import OptimConfig, SchedConfig, TrainConfig
from models.config import ModelConfig
from pipelines.config import DataConfig


def build_model(mcfg: ModelConfig, device: torch.device | None = None) -> nn.Module:
    """The network from `model:` (models.build_model, `pretrained` loaded) for `device` (a GPU: without the
    CPU kernels), still on the CPU and unwrapped."""
    import models

    return models.build_model(mcfg, device)  # channels-last (parameters strided like their gradients) if set


def build_loaders(dcfg: DataConfig, accelerator, *, seed: int, T: int, need_train: bool = True):
    """(train, val) loaders from `data:`; train is None when not needed (test-only)."""
    import pipelines

    train = pipelines.build_loader(dcfg, "train", accelerator, seed=seed, T=T) if need_train else None
    val = pipelines.build_loader(dcfg, "val", accelerator, seed=seed, T=T)
    return train, val


def build_optimizer(model: nn.Module, ocfg: OptimConfig) -> torch.optim.Optimizer:
    """timm create_optimizer_v2: no weight decay on 1-D/0-D params (biases, BN, PLIF w) as in the recipe."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=ocfg.name, lr=ocfg.lr, weight_decay=ocfg.weight_decay,
                               eps=ocfg.eps, betas=tuple(ocfg.betas))


def build_scheduler(optimizer, scfg: SchedConfig, *, epochs: int, steps_per_epoch: int):
    """timm cosine with linear warm-up from warmup_lr, as the seed's create_scheduler_v2 call.

    Per epoch (`step(epoch)`) by default; `sched.per_step` makes it per optimizer update
    (`step_update(n)`), with the same shape stretched over epochs * steps_per_epoch updates.
    """
    from timm.scheduler import create_scheduler_v2

    sched, _ = create_scheduler_v2(
        optimizer, sched=scfg.name, num_epochs=epochs, min_lr=scfg.min_lr, warmup_lr=scfg.warmup_lr,
        warmup_epochs=scfg.warmup_epochs, step_on_epochs=not scfg.per_step,
        updates_per_epoch=steps_per_epoch)
    return sched


class Criterion(nn.Module):
    """Loss on the T-mean of the logits, or TET (per-step CE averaged over T + lambda * MSE to phi)."""

    def __init__(self, label_smoothing: float = 0.0, tet: bool = False, phi: float = 1.0, lam: float = 0.0):
        super().__init__()
        self.ls, self.tet, self.phi, self.lam = label_smoothing, tet, phi, lam

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if target.dtype.is_floating_point:  # soft targets from mixup/cutmix: smoothing already folded in
            return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.ls)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # out: [T, B, K] per-step logits
        if not self.tet:
            return self._ce(out.mean(0), target)  # [B, K]
        loss = sum(self._ce(out[t], target) for t in range(out.shape[0])) * (1.0 - self.lam) / out.shape[0]
        if self.lam != 0:
            loss = loss + self.lam * F.mse_loss(out.float(), torch.full_like(out.float(), self.phi))
        return loss


def build_criterion(tcfg: TrainConfig, label_smoothing: float) -> Criterion:
    """The training loss from `train.tet*` and `data.label_smoothing`."""
    return Criterion(label_smoothing, tcfg.tet, tcfg.tet_phi, tcfg.tet_lambda)
