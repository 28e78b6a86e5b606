"""SpikingResformer models: `import models` registers the variants in timm.

Public API: `build_model(cfg, device=None)`, `list_models()`,
`load_weights(model, path_or_state, transfer=...)`, `LoadReport`, `CheckpointError`, `SpikingResformer`,
`ARCHS`; SOP/energy counting in `models.sops`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.cbuild import cpu_kernels
from models.checkpoint import CheckpointError, LoadReport, load_weights
from models.config import ModelConfig
from models.spikingresformer import ARCHS, Arch, SpikingResformer, create

__all__ = ["ARCHS", "Arch", "CheckpointError", "LoadReport", "ModelConfig", "SpikingResformer",
           "build_model", "compile_model", "create", "list_models", "load_weights"]


def list_models() -> list[str]:
    """Names of the registered SpikingResformer variants."""
    return sorted(ARCHS)


def build_model(cfg: ModelConfig, device: torch.device | str | None = None) -> nn.Module:
    """Build the configured variant (channels-last if asked, `pretrained` loaded strictly), on the CPU.

    `device`: where the model will run (None: a CPU). Built for another device it is set up without the
    CPU kernels (`models.cbuild.cpu_kernels`): nothing compiles or asks for them there. `cfg.compile` is
    not applied here: the trainer wraps the model with `compile_model` after moving it to its device, so
    hooks keep seeing the plain module.
    """
    if cfg.name not in ARCHS:
        raise ValueError(f"model.name: unknown model {cfg.name!r}; choose one of {list_models()}")
    with cpu_kernels(device is None or torch.device(device).type == "cpu"):
        model = create(cfg.name, T=cfg.T, num_classes=cfg.num_classes, img_size=cfg.img_size,
                       in_channels=cfg.in_channels, frozen_ema=cfg.frozen_ema,
                       sparse_conv=cfg.sparse_conv)
    if cfg.pretrained:
        load_weights(model, cfg.pretrained)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, **kwargs) -> nn.Module:
    """torch.compile with the settings measured to work for this model (static shapes, full graph)."""
    kwargs.setdefault("dynamic", False)
    return torch.compile(model, **kwargs)
