"""Event recordings written in the CIFAR10-DVS release format (AEDAT 2.0), for the convert mode and tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_aedat2(path: Path, xr: np.ndarray, yr: np.ndarray, pr: np.ndarray, t: np.ndarray) -> None:
    """Write an AEDAT 2.0 file like the CIFAR10-DVS release: '#' header lines + big-endian (addr, t) pairs."""
    addr = (yr.astype(np.uint32) << 8) | (xr.astype(np.uint32) << 1) | pr.astype(np.uint32)
    body = np.empty(2 * len(addr), ">u4")
    body[0::2], body[1::2] = addr, t
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file created by saveaerdat.m\r\n"
    path.write_bytes(header + body.tobytes())


def random_aedat2(path: Path, n: int, seed: int) -> None:
    """A synthetic 128x128 CIFAR10-DVS-like recording with `n` events (uniform positions, sorted times)."""
    rng = np.random.default_rng(seed)
    write_aedat2(
        path,
        rng.integers(0, 128, n),
        rng.integers(0, 128, n),
        rng.integers(0, 2, n),
        np.sort(rng.integers(0, 1_000_000, n)).astype(np.uint32),
    )
