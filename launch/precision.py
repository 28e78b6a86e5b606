"""Precision and loader workers that fit the machine: `auto` resolved once per run, with a reason to print.

`resolve_amp_dtype("auto", device)` picks the autocast dtype:
- CPU: bf16 only where the CPU computes bf16 natively (AVX-512 BF16 or AMX) and a short measurement (a conv +
  linear train step, fp32 vs bf16 autocast) shows bf16 at least `MIN_SPEEDUP` times faster; else fp32. Without
  native bf16, torch's bf16 convolutions and linears run 11-61x slower than fp32 (an AVX2 CPU, issue 22), so
  nothing is measured there. The measurement's verdict is kept per CPU (feature flags + torch version) as a
  small JSON in models.cbuild.cache_dir(), so it runs once per machine (ranks of one node wait for the first).
- CUDA: bf16 on compute capability 8.0 (Ampere) and newer, fp16 before (the trainer then scales the loss:
  accelerate adds a GradScaler for fp16).
An explicit "fp16" on a CPU gives fp32: the official code's `torch.cuda.amp.autocast` does nothing there, so
its CPU runs were fp32. `resolve_precision` adds `train.amp` and `train.eval_amp` (evaluation in fp32 unless
asked) and is what the run uses, prints and records.

`resolve_workers("auto", processes_per_node=n)` gives each process's loader the cores that process may use
(see its docstring). Both return `(value, reason)`; the trainer prints the
reason and records both in the run.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models.cbuild import cache_dir, cpu_flags, vector_isa

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
MIN_SPEEDUP = 1.1  # bf16 changes the numerics: take it on a CPU only for a clear gain, not for noise
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively: AVX-512 BF16 (`avx512_bf16`) or AMX (`amx_bf16`)."""
    f = cpu_flags() if flags is None else flags
    return any(flag in f for flag in NATIVE_BF16_FLAGS)


def resolve_amp_dtype(requested: str, device: torch.device | str, *, probe: bool = True) -> tuple[str, str]:
    """The autocast dtype for `requested` ("auto", "bf16", "fp16" or "fp32") on `device`: ("bf16" | "fp16" |
    "no", reason). On CPU, `probe=False` never measures: a verdict already cached decides, else the flags
    alone. A CUDA device's capability is queried only for "auto" (that query needs CUDA)."""
    if requested not in AMP_CHOICES:
        raise ValueError(f"train.amp_dtype={requested!r} is not one of {', '.join(AMP_CHOICES)}: pick one")
    device = torch.device(device)
    if requested == "fp32":
        return "no", "fp32 requested: no autocast"
    if device.type == "cuda":
        if requested != "auto":
            return requested, f"{requested} requested"
        major, minor = cuda_capability(device)
        if major >= 8:
            return "bf16", f"CUDA capability {major}.{minor}: bf16"
        return "fp16", f"CUDA capability {major}.{minor} (before Ampere): fp16 with a GradScaler"
    if device.type != "cpu":
        if requested == "auto":
            return "no", f"{device.type}: fp32"
        return requested, f"{requested} requested"
    return _resolve_cpu(requested, probe)


def _resolve_cpu(requested: str, probe: bool) -> tuple[str, str]:
    flags = cpu_flags()
    isa = f"CPU {vector_isa(flags)}"
    if requested == "fp16":  # the official code's torch.cuda.amp autocast does nothing on a CPU: fp32 there
        return "no", "fp16 requested on a CPU: fp32, as the official code (its CUDA autocast is off on a CPU)"
    if requested == "bf16":
        if cpu_has_native_bf16(flags):
            return "bf16", "bf16 requested"
        return "bf16", f"bf16 requested ({isa} has no native bf16: expect it slower than fp32)"
    if not cpu_has_native_bf16(flags):
        return "no", f"{isa} without native bf16: fp32"
    speedup = cached_bf16_speedup(flags) if not probe else probed_bf16_speedup(flags)
    if speedup is None:
        return "bf16", f"{isa}, native bf16 (not measured): bf16"
    if speedup >= MIN_SPEEDUP:
        return "bf16", f"{isa}, bf16 measured {speedup:.1f}x faster: bf16"
    return "no", f"{isa}, bf16 measured {speedup:.2f}x fp32's speed (below {MIN_SPEEDUP}x): fp32"


@dataclass(frozen=True)
class RunPrecision:
    """A run's precision: the autocast dtype of training ("bf16" | "fp16" | "no"), why, and evaluation's."""

    train: str
    reason: str
    eval: str  # "fp32", or the training dtype with train.eval_amp

    def line(self) -> str:
        """One line for the log: training dtype, the reason, evaluation dtype."""
        return f"precision: train {self.label} ({self.reason}); eval {self.eval}"

    @property
    def label(self) -> str:
        """The training dtype as a name: bf16, fp16 or fp32."""
        return "fp32" if self.train == "no" else self.train

    def record(self) -> dict:
        """What run.json and summary.json keep of it."""
        return {"train": self.label, "reason": self.reason, "eval": self.eval}


@functools.lru_cache(maxsize=8)
def resolve_precision(amp: bool, amp_dtype: str, eval_amp: bool, device: str) -> RunPrecision:
    """`train.amp`, `train.amp_dtype` and `train.eval_amp` on `device`, resolved once per process (cached:
    the accelerator and the run record ask for the same answer)."""
    train, reason = resolve_amp_dtype(amp_dtype, device) if amp else ("no", "train.amp=false: fp32")
    return RunPrecision(train, reason, train if eval_amp and train != "no" else "fp32")


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The CUDA device's compute capability (needs CUDA; tests replace it)."""
    return torch.cuda.get_device_capability(device)


def _probe_path(flags: frozenset[str]) -> Path:
    key = "\0".join([*sorted(flags), platform.machine(), torch.__version__])
    return cache_dir() / f"amp-probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def cached_bf16_speedup(flags: frozenset[str] | None = None) -> float | None:
    """This CPU's measured bf16 speed-up over fp32 (fp32 time / bf16 time), if already measured, else None."""
    path = _probe_path(cpu_flags() if flags is None else flags)
    try:
        return float(json.loads(path.read_text())["bf16_speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not measured yet, or a damaged file: measured again


def probed_bf16_speedup(flags: frozenset[str] | None = None) -> float:
    """This CPU's bf16 speed-up over fp32, measured once per CPU and torch version and then read from the
    cache; processes of one node that ask at once wait for the first one's measurement (a lock file)."""
    flags = cpu_flags() if flags is None else flags
    path = _probe_path(flags)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent measurements would slow each other down
        speedup = cached_bf16_speedup(flags)
        if speedup is None:
            speedup = measure_bf16_speedup()
            record = {"bf16_speedup": speedup, "cpu": vector_isa(flags), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, path)
    return speedup


def measure_bf16_speedup(budget_s: float = 1.0, max_rounds: int = 20) -> float:
    """fp32 step time / bf16-autocast step time of a small conv + linear train step on this CPU: one untimed
    warm-up step each, then interleaved rounds until `budget_s` seconds or `max_rounds`; the fastest step of
    each (the least disturbed by other processes). The global RNG is left as it was: a run's initialisation
    must not depend on whether this machine's verdict was cached."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(8, 64, 16, 16).contiguous(memory_format=torch.channels_last)  # [B, C, H, W]
        model = torch.nn.Sequential(  # a SpikingResformer stage's kinds: 3x3, 1x1, then a linear over pixels
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.Conv2d(64, 128, 1), torch.nn.Flatten(2),
            _Transpose(), torch.nn.Linear(128, 128)).to(memory_format=torch.channels_last)

    def step(dtype: torch.dtype | None) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = model(x).float().square().mean()  # [B, H*W, 128] -> scalar
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(None), step(torch.bfloat16)  # warm-up: oneDNN builds its kernels for each dtype on first use
    fp32, bf16 = [], []
    end = time.perf_counter() + budget_s
    while len(fp32) < 2 or (len(fp32) < max_rounds and time.perf_counter() < end):
        fp32.append(step(None))
        bf16.append(step(torch.bfloat16))
    return min(fp32) / max(min(bf16), 1e-9)


class _Transpose(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)  # [B, C, H*W] -> [B, H*W, C]


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of the cgroup's quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), or None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def resolve_workers(requested: int | str, *, processes_per_node: int) -> tuple[int, str]:
    """Loader workers per process: a count as given, or for "auto" the cores each of the node's
    `processes_per_node` processes may use (affinity and cgroup quota, split evenly), at least 1:
    (workers, reason).

    A loader that keeps ahead of the step sleeps on its full queue, so on CPU training the workers take
    cores from the step only while catching up."""
    if isinstance(requested, str) and requested.strip().isdigit():
        requested = int(requested)
    if isinstance(requested, int) and not isinstance(requested, bool):
        if requested < 0:
            raise ValueError(f"data.workers={requested} is negative: give 0 or more, or auto")
        return requested, f"data.workers={requested}"
    if requested != "auto":
        raise ValueError(f"data.workers={requested!r} is neither a count nor auto: give 0 or more, or auto")
    procs = max(1, int(processes_per_node))
    cores = available_cores()
    workers = max(1, cores // procs)
    return workers, f"data.workers=auto: {cores} cores for {procs} process(es) on this node: {workers} each"
