"""Fixtures and helpers shared by the trainer, fault and study suites (imported into their conftest files)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(head + arr.astype(np.uint8).tobytes()))


def fashion_mnist_subset(dst: Path, n_train: int, n_test: int) -> Path:
    """The first samples of the real Fashion-MNIST release rewritten as idx-ubyte.gz files into `dst`."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{FMNIST} is missing: `make setup` installs the Debian package dataset-fashion-mnist")
    for pre, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(dst / f"{pre}-{kind}-ubyte.gz", _read_idx(FMNIST / f"{pre}-{kind}-ubyte.gz")[:n])
    return dst


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors (and forked children): one intra-op thread; two are slower on a shared 2-core machine."""
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
