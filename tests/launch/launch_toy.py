"""Small stand-ins obeying the package contracts (model, Loader, TrainingHook) for trainer tests."""
from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron
from torch import nn

REAL_ARGS = ["model.name=spikingresformer_tiny", "dassdp.warmup_steps=3"]  # real model + DA-SSDP acting
TOY_ARGS = ["model.T=2", "model.num_classes=4", "data.input_size=[3,8,8]", "data.batch_size=8",
            "train.amp=false", "log.every_steps=2", "sched.warmup_epochs=1", "optim.lr=1e-2"]


class ToyNet(nn.Module):
    """A spiking net with the SpikingResformer contract: [B,C,H,W] or [B,T,C,H,W] in, [T,B,K] out."""

    def __init__(self, T: int = 2, in_channels: int = 3, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.T = T
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.lif = neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m")
        self.classifier = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(1).repeat(1, self.T, 1, 1, 1)  # [B, T, C, H, W]
        x = x.transpose(0, 1)  # [T, B, C, H, W]
        T, B = x.shape[:2]
        y = self.bn(self.stem(x.flatten(0, 1)))  # [T*B, W, H, W]
        s = self.lif(y.reshape(T, B, *y.shape[1:]))  # [T, B, W, H, W]
        return self.classifier(s.mean((3, 4)))  # [T, B, K]

    def dassdp_sites(self) -> dict:
        return {"classifier": ("classifier", "linear", "weight")}


class MemLoader:
    """Deterministic in-memory loader: batches are a function of (seed, epoch, batch index), rank-sharded."""

    def __init__(self, n: int = 64, batch_size: int = 8, classes: int = 4, size: int = 8, seed: int = 0,
                 rank: int = 0, world: int = 1, train: bool = True, device="cpu", frames: int = 0):
        g = torch.Generator().manual_seed(1234)
        self.labels = torch.arange(n) % classes
        shape = (n, frames, 3, size, size) if frames else (n, 3, size, size)
        pattern = torch.randn(classes, *shape[1:], generator=g)
        self.images = pattern[self.labels] + 0.5 * torch.randn(shape, generator=g)
        self.bs, self.seed, self.rank, self.world, self.train = batch_size, seed, rank, world, train
        self.device, self.epoch, self.start = device, 0, 0
        self.num_samples = n
        self.fail_at = None  # (epoch, batch): raise like a dead worker

    def __len__(self) -> int:
        per_rank = self.num_samples // self.world
        return per_rank // self.bs if self.train else -(-per_rank // self.bs)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __iter__(self):
        order = torch.arange(self.num_samples)
        if self.train:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        mine = order[self.rank::self.world]
        for b in range(self.start, len(self)):
            if self.fail_at == (self.epoch, b):
                raise RuntimeError("DataLoader worker (pid 4242) exited unexpectedly")
            idx = mine[b * self.bs:(b + 1) * self.bs]
            x = self.images[idx].to(self.device)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx].to(self.device)


class ToyHook:
    """A TrainingHook: counts real steps and nudges the classifier (all-reduced), with state."""

    def __init__(self):
        self.calls = torch.zeros((), dtype=torch.int64)

    def setup(self, model, *, steps_per_epoch: int) -> None:
        self.model_seen, self.steps_per_epoch = model, steps_per_epoch

    def after_optimizer_step(self, model, *, loss, epoch: int, step: int) -> dict:
        assert not torch.is_grad_enabled()
        dw = 1e-3 * torch.tanh(model.classifier.weight) * (1 + (self.calls % 3))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(dw)
            dw /= torch.distributed.get_world_size()
        model.classifier.weight.add_(dw)
        self.calls += 1
        return {"dw_abs": dw.abs().mean(), "calls": float(self.calls)}

    def state_dict(self) -> dict:
        return {"calls": self.calls.clone()}

    def load_state_dict(self, sd: dict) -> None:
        self.calls = sd["calls"].clone()

    def close(self) -> None:
        pass


def install(monkeypatch=None, *, model: str = "toy", hook: str = "toy", loader: str = "mem",
            frames: int = 0, n: int = 64, fail_at=None):
    """Route the trainer's builders to the stand-ins ("toy"/"mem"); "real" keeps the real package.

    The toy hook replaces the registry's build: `dassdp.enabled` switches it on, as for the real rule.
    """
    from launch import hooks, parts

    def build_model(mcfg, device=None):
        return ToyNet(T=mcfg.T, in_channels=3, num_classes=mcfg.num_classes or 4)

    def build_loaders(dcfg, acc, *, seed, T, need_train=True):
        kw = dict(batch_size=dcfg.batch_size, classes=dcfg.num_classes or 4, seed=seed,
                  rank=acc.process_index, world=acc.num_processes, device=acc.device, frames=frames, n=n,
                  size=dcfg.input_size[-1])
        train = MemLoader(**kw) if need_train else None
        if train is not None:
            train.fail_at = fail_at
        return train, MemLoader(**{**kw, "train": False})

    def build_hooks(cfg):
        return {"toy": ToyHook()} if cfg.dassdp.enabled else {}

    fns = {"build_model": (model, parts, build_model), "build_loaders": (loader, parts, build_loaders),
           "build_hooks": (hook, hooks, build_hooks)}
    for name, (kind, module, fn) in fns.items():
        if kind == "real":
            continue
        if monkeypatch is not None:
            monkeypatch.setattr(module, name, fn)
        else:
            setattr(module, name, fn)
