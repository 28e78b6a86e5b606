"""Stopping a run early and resumably: scheduler signals and time limits, agreed on by every rank.

SIGTERM, SIGINT and SIGUSR1 (SLURM's `--signal=B:USR1@<s>`, forwarded by
`launch/accelerate/slurm_multinode.sh`) only set a flag. At every optimizer-step boundary the trainer asks
`StopRequest.requested()`: the ranks agree with one all-reduce (MAX) of a one-element CPU tensor (a gloo
group beside NCCL: no GPU sync per step), so every rank saves `last` at the same step and exits with
status 75 (`EXIT_PREEMPTED`). A further signal while saving only sets the flag again: no write is cut.

The time limit is `train.time_limit` from the start of this process, or SLURM's job end
(`SLURM_JOB_END_TIME`, else `squeue -o %L` when `SLURM_JOB_ID` is set), whichever is first. The run stops
once the time left is under the margin: 2x the slowest checkpoint save seen (60 s before the first one)
+ the slowest optimizer step + the slowest evaluation seen.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
TIME_LIMIT = 1  # the agreed code for "time limit"; signals use their number (all above 1)
UNSEEN_SAVE_S = 60.0  # assumed checkpoint save time before the first save was measured


def parse_duration(text: str | int | float) -> float:
    """Seconds of `[D-]HH:MM:SS`, `MM:SS` or a number of seconds; ValueError otherwise."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(?:(\d+)-)?(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration like 3:55:00, 1-00:00:00 or 14100")
    d, a, b, s = m.groups()
    h, mi = (a, b) if b is not None else (None, a)
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s)


def slurm_seconds_left(env=os.environ, now: float | None = None) -> float | None:
    """Seconds until SLURM ends this job: SLURM_JOB_END_TIME (epoch s), else `squeue %L`; None outside."""
    now = time.time() if now is None else now
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return int(env["SLURM_JOB_END_TIME"]) - now
    if not env.get("SLURM_JOB_ID"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", env["SLURM_JOB_ID"], "-o", "%L"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
        return parse_duration(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # no squeue, UNLIMITED, NOT_SET: no SLURM limit known


class StopRequest:
    """Signals received and the time left, turned into one decision that every rank shares."""

    def __init__(self, time_limit: str | float | None = None, env=os.environ):
        self.signal, self._old, self.group = 0, {}, None
        left = [x for x in (parse_duration(time_limit) if time_limit is not None else None,
                            slurm_seconds_left(env)) if x is not None]
        self.deadline = time.monotonic() + min(left) if left else None  # monotonic s
        self.slowest = {"save": 0.0, "step": 0.0, "eval": 0.0}  # s
        self._last = None  # monotonic time of the last step boundary

    # ------------------------------------------------------------------------- signals
    def install(self) -> StopRequest:
        """Catch SIGTERM/SIGINT/SIGUSR1 from now on (main thread only: Python's rule for handlers)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def join(self, acc) -> None:
        """With several ranks beside NCCL: a gloo group, so the per-step agreement needs no device sync."""
        if acc.num_processes > 1:
            import torch.distributed as dist

            if dist.get_backend() != "gloo":  # collective: every rank calls join at the same point
                self.group = dist.new_group(backend="gloo")

    def uninstall(self) -> None:
        """Put the previous handlers back."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _on_signal(self, signum, frame) -> None:
        if not self.signal:  # os.write: safe inside a handler (print could re-enter a busy stream)
            os.write(2, f"dassdp-train: {signal.Signals(signum).name} received: finishing the current "
                        "step, then saving\n".encode())
        self.signal = self.signal or signum

    # ------------------------------------------------------------------------- time
    def margin(self) -> float:
        """Seconds kept in reserve before the deadline: 2x the slowest save + one step + one evaluation."""
        s = self.slowest
        return 2 * (s["save"] or UNSEEN_SAVE_S) + s["step"] + s["eval"]

    @contextlib.contextmanager
    def timing(self, kind: str):
        """Measure a save or an evaluation (its slowest enters the margin)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            now = time.monotonic()
            self.slowest[kind] = max(self.slowest[kind], now - t0)
            self._last = now  # the next step's time starts here

    def _local(self, timed: bool) -> int:
        now = time.monotonic()
        if self._last is not None and timed:
            self.slowest["step"] = max(self.slowest["step"], now - self._last)
        self._last = now
        if self.signal:
            return self.signal
        if timed and self.deadline is not None and now + self.margin() >= self.deadline:
            return TIME_LIMIT
        return 0

    def requested(self, acc=None, timed: bool = True) -> str | None:
        """Why the run must stop now (the same answer on every rank: collective), None to go on.

        timed=False (before the first step) looks at signals only: a job always makes some progress.
        """
        code = self._local(timed)
        if acc is not None and acc.num_processes > 1:
            import torch
            import torch.distributed as dist

            device = "cpu" if self.group is not None or dist.get_backend() == "gloo" else acc.device
            flag = torch.tensor([code], dtype=torch.int32, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            code = int(flag.item())
        if code == 0:
            return None
        if code == TIME_LIMIT:
            return f"time limit near (margin {self.margin():.0f} s)"
        return f"{signal.Signals(code).name} received"


def record_exit(code: int, env=os.environ) -> None:
    """Write the exit status to $DASSDP_EXIT_FILE (rank 0 only): torchrun reports a worker's 75 as 1."""
    path = env.get("DASSDP_EXIT_FILE")
    if path and env.get("RANK", "0") == "0":
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{code}\n")
        os.replace(tmp, path)
