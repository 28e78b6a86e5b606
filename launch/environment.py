"""What a run or a figure was made on: library versions, git revision, hardware, threads, load.

One place for these records: checkpoints and run folders store `versions()` and `git_revision()`, every
benchmark JSON stores all five (`tools/bench`).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Distributions whose version changes results or speed; a missing one is recorded as None.
PACKAGES = ("torchvision", "timm", "accelerate", "spikingjelly", "numpy", "dassdp", "safetensors", "pillow",
            "ffcv", "nvidia-dali-cuda120", "numba", "tonic", "opencv-python", "triton", "scikit-image",
            "matplotlib")


def versions() -> dict[str, str | None]:
    """Python, torch (with its build tag, e.g. `+cu130`), CUDA and the PACKAGES' versions (None: absent)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["cuda"] = str(torch.version.cuda)
    return out


def git_revision(root: Path | None = None) -> dict[str, str | bool | None]:
    """HEAD commit of the source tree and whether tracked files have uncommitted changes (None: unknown)."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root or ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first `key:` line of a /proc file (None where it is not readable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def hardware() -> dict:
    """CPU model and vector ISA, cores, RAM, GPUs (if any), platform."""
    from models.cbuild import vector_isa

    mem_kib = _proc_field("/proc/meminfo", "MemTotal:")
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    return {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
            # bf16 speed depends on it: AVX-512 BF16 / AMX run bf16 autocast fast, AVX2 many times slower
            "vector_isa": vector_isa(),
            "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None, "gpus": gpus,
            "cuda": torch.version.cuda if gpus else None, "platform": platform.platform()}


def threads() -> dict[str, int]:
    """The thread counts in force for this process."""
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "omp_num_threads_env": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}


def load_average() -> list[float]:
    """1/5/15-minute load average: above the core count means the CPU was shared while measuring."""
    return [round(x, 2) for x in os.getloadavg()]
