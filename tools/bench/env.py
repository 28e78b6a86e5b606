"""What a figure was measured on: hardware, thread counts, library versions, git revision, load."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "torchvision", "timm", "spikingjelly", "numpy", "pillow", "accelerate", "ffcv",
            "nvidia-dali-cuda120", "numba", "tonic", "opencv-python", "triton", "scikit-image", "matplotlib")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter for speed (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> dict[str, str | bool | None]:
    """HEAD commit of the project and whether the work tree has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def hardware() -> dict:
    """CPU model, cores, RAM, GPU (if any)."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    return {"cpu": _cpu_model(), "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "ram_gib": _ram_gib(), "gpus": gpus,
            "cuda": torch.version.cuda if gpus else None, "platform": platform.platform()}


def threads() -> dict[str, int]:
    """The thread counts in force for this process."""
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "omp_num_threads_env": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}


def load_average() -> list[float]:
    """1/5/15-minute load average: above the core count means the CPU was shared while measuring."""
    return [round(x, 2) for x in os.getloadavg()]
