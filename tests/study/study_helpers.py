"""Helpers for the dassdp-study tests: the tiny recipe and the command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny(data: Path) -> list[str]:
    """Shared overrides: configs/smoke.yaml cut to 2 epochs x 2 steps on the subset (torchvision loader)."""
    return ["data.backend=torchvision", f"data.path={data}", "data.workers=0", "train.epochs=2",
            "train.max_steps_per_epoch=2", "train.eval_batches=1", "log.every_steps=1"]


def study_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per run: fastest on a shared 2-core machine


def study_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.study.cli", *map(str, args)]


def study(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `dassdp-study ARGS` from the repository root."""
    return subprocess.run(study_cmd(*args), cwd=ROOT, env=study_env(), capture_output=True, text=True,
                          timeout=timeout)
