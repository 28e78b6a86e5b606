"""Fixtures for trainer tests: a fresh accelerate state per in-process run and the toy parts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import launch_toy as toy  # noqa: E402
from common_fixtures import fashion_mnist_subset, fresh_accelerate, one_thread  # noqa: E402,F401 (autouse)
from launch_toy import TOY_ARGS  # noqa: E402


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


N_TRAIN, N_VAL = 48, 16


@pytest.fixture(scope="session")
def fmnist_src(tmp_path_factory) -> Path:
    """The first samples of the real Fashion-MNIST release, rewritten as idx-ubyte.gz files."""
    return fashion_mnist_subset(tmp_path_factory.mktemp("fmnist"), N_TRAIN, N_VAL)
