"""Honest timing: warm-up, device synchronisation, repeats, A B A B interleaving, ratios, peak memory.

A *case* is a zero-argument callable that does one unit of work (an epoch of a loader, a few training
steps) and returns how many items (images, events, steps) it processed. `Bench.compare` warms every case
up, then runs them interleaved round by round (A B | B A | A B ...) so that slow drifts of a shared
machine (other jobs, thermal state) and position effects hit every case alike, and records
min/median/max of the per-repeat rates plus, for each pair, the median of the per-round ratios.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Case = Callable[[], float]


def sync(device: torch.device | str | None) -> None:
    """Wait for queued device work (no-op on CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Case, device: torch.device | str | None = None) -> tuple[float, float]:
    """Run `fn` once; return (items, seconds). On CUDA the time comes from events after a synchronise."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        n = fn()
        end.record()
        end.synchronize()
        return float(n), start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    n = fn()
    return float(n), time.perf_counter() - t0


def summary(samples: list[float]) -> dict[str, float]:
    """min / median / max of a list of samples."""
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


# ----------------------------------------------------------------------------- peak memory
class PeakMemory:
    """Peak growth of tensor memory over a block, in bytes above what was allocated at its start.

    CUDA: `torch.cuda.max_memory_allocated`. CPU: the allocation/free events that the torch profiler
    records with profile_memory=True, summed in time order (every thread of this process; exact for torch
    tensors, blind to memory that is not a tensor and to other processes such as loader workers). The
    profiler slows the block down: use a separate pass, never a timed one.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_bytes = 0
        self.method = ("cuda_max_memory_allocated" if self.device.type == "cuda"
                       else "torch_profiler_cpu_allocations")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._prof.__exit__(*exc)
        events = [e for e in self._prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
        level = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            level += e.nbytes()
            peak = max(peak, level)
        self.peak_bytes = peak

    @property
    def mib(self) -> float:
        """The peak growth in MiB."""
        return self.peak_bytes / 2**20


# ----------------------------------------------------------------------------- results
@dataclass
class Bench:
    """Collects result records and ratios for one mode; `to_json()` gives the documented shape."""

    mode: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    results: list[dict] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, case: str, metric: str, unit: str, samples: list[float], **extra: Any) -> dict:
        """Record one (case, metric) with its samples; extra keys (settings, threads...) are kept."""
        rec = {"mode": self.mode, "case": case, "metric": metric, "unit": unit, **summary(samples),
               "repeats": len(samples), "samples": [float(s) for s in samples], **extra}
        self.results.append(rec)
        return rec

    def add_ratio(self, a: str, b: str, metric: str, per_round: list[float], **extra: Any) -> dict:
        """Record the ratio a/b of `metric` (one value per interleaved round)."""
        rec = {"mode": self.mode, "a": a, "b": b, "metric": metric, **summary(per_round),
               "rounds": len(per_round), **extra}
        self.ratios.append(rec)
        return rec

    def compare(self, cases: dict[str, Case], *, metric: str, unit: str, warmup: int, repeats: int,
                baseline: str | None = None, per_second: bool = True, alternate: bool = True,
                **extra: Any) -> dict[str, list[float]]:
        """Warm up every case, run them interleaved round by round, record rates and ratios to `baseline`.

        Each round runs every case once; with `alternate` every other round runs them in reverse order
        (A B | B A | A B ...), so slow drifts and position effects (caches, allocator state left by the
        previous case) fall on every case alike.

        per_second=True: the metric is items/s (higher is better); False: seconds per item (ms).
        Returns the per-round samples by case.
        """
        for fn in cases.values():
            for _ in range(warmup):
                timed(fn, self.device)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        order = list(cases)
        for r in range(repeats):
            # odd rounds run in reverse order (A B, B A, A B, ...): a case never always goes first
            for name in (order if r % 2 == 0 or not alternate else order[::-1]):
                n, s = timed(cases[name], self.device)
                samples[name].append(n / s if per_second else 1e3 * s / max(n, 1.0))
        for name, vals in samples.items():
            self.add(name, metric, unit, vals, warmup=warmup, **extra)
        if baseline is not None:
            for name in cases:
                if name != baseline:
                    rounds = [a / b for a, b in zip(samples[name], samples[baseline])]
                    self.add_ratio(name, baseline, metric, rounds, **extra)
        return samples

    def to_json(self) -> dict:
        """The mode's part of the output JSON."""
        return {"results": self.results, "ratios": self.ratios, "notes": self.notes}
