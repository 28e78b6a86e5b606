"""Fixtures for trainer tests: a fresh accelerate state per in-process run and the toy parts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pytest puts tests/ on sys.path, where tests/dassdp would shadow the package (see tests/dassdp/conftest.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
for _name in ("dassdp", "models", "pipelines"):
    if _name in sys.modules and getattr(sys.modules[_name], "__file__", None) is None:
        del sys.modules[_name]

import toy  # noqa: E402

REAL_ARGS = ["model.name=spikingresformer_tiny", "dassdp.warmup_steps=3"]  # real model + DA-SSDP acting
TOY_ARGS = ["model.T=2", "model.num_classes=4", "data.input_size=[3,8,8]", "data.batch_size=8",
            "train.amp=false", "log.every_steps=2", "sched.warmup_epochs=1", "optim.lr=1e-2"]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors: one intra-op thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """accelerate keeps process-wide singletons: reset them around every in-process run."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    torch.set_grad_enabled(True)


@pytest.fixture
def toy_train(monkeypatch):
    """Call the real entry point with the stand-in parts; returns the exit status."""
    from launch.train import main

    def go(out, *overrides, fail_at=None, n=64, **kinds):
        toy.install(monkeypatch, fail_at=fail_at, n=n, **kinds)
        from accelerate.state import AcceleratorState, GradientState, PartialState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        return main([*TOY_ARGS, "--output-dir", str(out), *overrides])

    return go
