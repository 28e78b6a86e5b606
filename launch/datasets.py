"""Data that a job can make for itself: Fashion-MNIST converted by dassdp-convert on first use.

The conversion runs as `python -m tools.convert.cli` in a child process of the same interpreter: the
same code as the command, and `launch` does not import `tools` (the layer above it).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from launch.errors import ConfigError
from pipelines.config import DataConfig

FASHION_MNIST_SRC = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
CONVERTED = ("ffcv", "dali")


def convert_command(data: DataConfig, src: Path | None = None) -> list[str]:
    """The one dassdp-convert command that builds `data.path` for Fashion-MNIST."""
    src = src or FASHION_MNIST_SRC
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
    tty = sys.stderr.isatty()  # a terminal sees the progress bar; otherwise the error line is kept
    child = [sys.executable, "-m", "tools.convert.cli", *cmd[1:], *([] if tty else ["--quiet"])]
    root = str(Path(__file__).resolve().parents[1])  # the tree this `launch` came from, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(child, env=env, stdout=subprocess.PIPE, stderr=None if tty else subprocess.PIPE,
                          text=True)
    sys.stderr.write(done.stdout)
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        why = lines[-1].removeprefix("dassdp-convert: ")[:200] if lines else "see its message above"
        raise ConfigError(f"data.path={data.path}: automatic conversion failed (exit {done.returncode}: "
                          f"{why}); run `{' '.join(cmd)}` yourself and retry")
