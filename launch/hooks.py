"""Training-time methods: the `TrainingHook` protocol and the registry the trainer builds them from.

A hook is any object with the five methods of `TrainingHook` (structural: no base class to inherit). The
trainer calls `after_optimizer_step` only after a real optimizer step, under `no_grad`, on the unwrapped
model; the checkpointer stores each hook's `state_dict` under its name.

The registry maps a name to (config section class, factory). The name is also the YAML section: the
section class is a dataclass with an `enabled: bool` field, and the trainer builds `factory(section)` for
every registered hook whose section says `enabled: true` (the one place that decides on/off). Its
checks belong to the section class: a `check()` method raising ValueError, called when the config loads.

Layering: `launch` sits above the packages that provide hooks, and those never import `launch`. So a
providing package declares its hook as plain data, `HOOK = {"name": ..., "config": ..., "build": ...}`,
and `PROVIDERS` below names where to find it; the registry imports them on first use. Anything else (a
test, a user's script) calls `register_hook(name, config_cls, factory)` before loading the config.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

PROVIDERS = ("dassdp:HOOK",)  # "module:attribute" of each built-in hook declaration


@runtime_checkable
class TrainingHook(Protocol):
    """A training-time method, called by the trainer after real optimizer steps (no_grad, unwrapped model)."""

    def setup(self, model: nn.Module, *, steps_per_epoch: int) -> None:
        """Attach to the (unwrapped) model before training."""

    def after_optimizer_step(self, model: nn.Module, *, loss: Tensor, epoch: int, step: int) -> dict:
        """Act after one real optimizer step; return metrics (tensors may stay on the device)."""

    def state_dict(self) -> dict:
        """Everything needed to resume exactly."""

    def load_state_dict(self, sd: dict) -> None:
        """Restore `state_dict()` output."""

    def close(self) -> None:
        """Detach from the model."""


@dataclass(frozen=True)
class HookSpec:
    """One registered hook: its YAML section name, the section's dataclass and the factory."""

    name: str
    config: type
    build: Callable[[Any], TrainingHook]


_REGISTRY: dict[str, HookSpec] = {}
_loaded = False


def register_hook(name: str, config_cls: type, factory: Callable[[Any], TrainingHook]) -> None:
    """Add a hook: YAML section `name` (a dataclass with `enabled: bool`) built by `factory(section)`."""
    is_section = dataclasses.is_dataclass(config_cls)
    if not is_section or "enabled" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise TypeError(f"hook {name!r}: {config_cls.__name__} must be a dataclass with an `enabled: bool` "
                        "field")
    _load_providers()
    _REGISTRY[name] = HookSpec(name, config_cls, factory)


def unregister_hook(name: str) -> None:
    """Remove a hook added by `register_hook` (tests)."""
    _REGISTRY.pop(name, None)


def _load_providers() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ref in PROVIDERS:
        module, attr = ref.split(":")
        decl = getattr(importlib.import_module(module), attr)
        register_hook(decl["name"], decl["config"], decl["build"])


def registered() -> dict[str, HookSpec]:
    """Every hook by name, built-in providers first (imported on the first call)."""
    _load_providers()
    return dict(_REGISTRY)


def build_hooks(cfg) -> dict[str, TrainingHook]:
    """The hooks whose config section says `enabled: true`, by name, in registration order."""
    return {name: spec.build(getattr(cfg, name)) for name, spec in registered().items()
            if getattr(cfg, name).enabled}
