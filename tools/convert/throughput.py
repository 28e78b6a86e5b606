"""Conversion throughput on synthetic inputs in the real formats (called by the bench tool)."""

from __future__ import annotations

import os
import platform
import tempfile
import time
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
    """A synthetic 128x128 CIFAR10-DVS-like recording with `n` events."""
    rng = np.random.default_rng(seed)
    write_aedat2(
        path,
        rng.integers(0, 128, n),
        rng.integers(0, 128, n),
        rng.integers(0, 2, n),
        np.sort(rng.integers(0, 1_000_000, n)).astype(np.uint32),
    )


def _jpeg_tree(root: Path, n_images: int, size: int) -> None:
    from PIL import Image
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    for i in range(n_images):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        y0, x0 = (i * 7) % max(1, h - size), (i * 13) % max(1, w - size)
        crop = img[y0 : y0 + size, x0 : x0 + size]
        folder = root / "train" / f"c{i % 2}" if i % 5 else root / "val" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"img_{i}.jpg", quality=90)


def measure_throughput(
    workdir: str | Path | None = None,
    *,
    n_images: int = 200,
    image_size: int = 256,
    n_recordings: int = 24,
    events_per_recording: int = 150_000,
    T: int = 10,
    fmt: str = "ffcv",
    workers: int | None = None,
) -> dict:
    """Time `convert` on a synthetic JPEG tree and AEDAT 2.0 recordings -> images/s, events/s and context."""
    from .api import convert

    workers = workers or os.cpu_count() or 1
    if fmt == "ffcv":
        import ffcv.writer  # noqa: F401  (warm-up: the one-off torch/ffcv import is not conversion time)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        _jpeg_tree(tmp / "jpeg", n_images, image_size)
        t0 = time.perf_counter()
        convert(
            "imagenet",
            tmp / "jpeg",
            tmp / "out_img",
            fmt,
            progress=False,
            workers=workers,
            write_mode="jpg" if fmt == "ffcv" else None,
        )
        t_img = time.perf_counter() - t0
        for c in range(2):
            (tmp / "dvs" / f"c{c}").mkdir(parents=True)
            for i in range(n_recordings // 2):
                random_aedat2(
                    tmp / "dvs" / f"c{c}" / f"rec_{i}.aedat", events_per_recording, seed=100 * c + i
                )
        t0 = time.perf_counter()
        convert(
            "cifar10dvs",
            tmp / "dvs",
            tmp / "out_dvs",
            fmt,
            progress=False,
            workers=workers,
            T=T,
            train_per_class=n_recordings // 2 - 2,
        )
        t_ev = time.perf_counter() - t0
    return {
        "images_per_s": n_images / t_img,
        "events_per_s": n_recordings * events_per_recording / t_ev,
        "recordings_per_s": n_recordings / t_ev,
        "format": fmt,
        "workers": workers,
        "n_images": n_images,
        "image_size": image_size,
        "n_recordings": n_recordings,
        "events_per_recording": events_per_recording,
        "T": T,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
