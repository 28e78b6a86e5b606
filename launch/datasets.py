"""Data that a job can make for itself: Fashion-MNIST converted by dassdp-convert on first use."""
from __future__ import annotations

import sys
from pathlib import Path

from launch.config import ConfigError
from pipelines.config import DataConfig

FASHION_MNIST_SRC = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
CONVERTED = ("ffcv", "dali")


def convert_command(data: DataConfig, src: Path = FASHION_MNIST_SRC) -> list[str]:
    """The one dassdp-convert command that builds `data.path` for Fashion-MNIST."""
    return ["dassdp-convert", "fashion-mnist", str(src), data.path, "--format", data.backend]


def ensure_data(data: DataConfig, *, main: bool) -> None:
    """Convert Fashion-MNIST into data.path on first use (main process only); other data is left alone."""
    if data.dataset != "fashion_mnist" or data.backend not in CONVERTED:
        return
    if (Path(data.path) / "manifest.json").is_file() or not main:
        return
    cmd = convert_command(data)
    if not (FASHION_MNIST_SRC / "train-images-idx3-ubyte.gz").is_file():
        raise ConfigError(f"data.path={data.path} is not converted and Fashion-MNIST is not installed; run "
                          f"`make setup` (installs dataset-fashion-mnist), then `{' '.join(cmd)}`")
    print(f"dassdp-train: converting Fashion-MNIST for the first run: {' '.join(cmd)}", file=sys.stderr)
    from tools.convert.api import convert  # the same code as the command, in this process

    try:
        convert("fashion-mnist", FASHION_MNIST_SRC, Path(data.path), data.backend,
                progress=sys.stderr.isatty())
    except Exception as e:  # noqa: BLE001 - one line for the user, the command to retry by hand
        raise ConfigError(f"data.path={data.path}: automatic conversion failed ({type(e).__name__}: "
                          f"{str(e)[:200]}); run `{' '.join(cmd)}` yourself and retry") from e
