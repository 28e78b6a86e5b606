"""Fixtures for trainer tests: a fresh accelerate state per in-process run and the toy parts."""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import launch_toy as toy  # noqa: E402
from common_fixtures import fresh_accelerate, one_thread  # noqa: E402,F401 (autouse fixtures)
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


FMNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_VAL = 48, 16


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(head + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="session")
def fmnist_src(tmp_path_factory) -> Path:
    """The first samples of the real Fashion-MNIST release, rewritten as idx-ubyte.gz files."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{FMNIST} is missing: `make setup` installs the Debian package dataset-fashion-mnist")
    src = tmp_path_factory.mktemp("fmnist")
    for pre, n in (("train", N_TRAIN), ("t10k", N_VAL)):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(src / f"{pre}-{kind}-ubyte.gz", _read_idx(FMNIST / f"{pre}-{kind}-ubyte.gz")[:n])
    return src
