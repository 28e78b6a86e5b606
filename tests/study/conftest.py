"""Fixtures for dassdp-study: a tiny subset of the real Fashion-MNIST."""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_helpers
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(head + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """48 training and 16 test images of the real Fashion-MNIST release, as idx-ubyte.gz files."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{FMNIST} is missing: `make setup` installs the Debian package dataset-fashion-mnist")
    src = tmp_path_factory.mktemp("fmnist")
    for pre, n in (("train", 48), ("t10k", 16)):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(src / f"{pre}-{kind}-ubyte.gz", _read_idx(FMNIST / f"{pre}-{kind}-ubyte.gz")[:n])
    return src
