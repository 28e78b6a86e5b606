"""Observability: training losses and accuracy, the run folder, step/epoch records, the progress bar.

Losses stay on the device until a log point (`LossTracker`); only the main process writes. Records are
flat dicts of floats; tensors are converted here, in one place, at the log interval (the only host syncs
of the training loop besides checkpoints).
"""
from __future__ import annotations

import csv
import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from launch.environment import git_revision


def write_run_info(out: Path, config_yaml: str, versions: dict, extra: dict) -> None:
    """config.yaml (resolved), run.json (git revision, versions, command, hardware)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml)
    info = {"git": git_revision(), "versions": versions, "argv": sys.argv, "host": socket.gethostname(),
            "platform": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")


@torch.no_grad()
def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Counts of samples whose label is in the top-k, as device tensors (no host sync)."""
    if target.dtype.is_floating_point:
        target = target.argmax(-1)
    k = min(max(ks), logits.shape[-1])
    pred = logits.topk(k, dim=-1).indices  # [B, k]
    hit = pred.eq(target[:, None])  # [B, k]
    return [hit[:, : min(kk, k)].any(-1).sum() for kk in ks]


class LossTracker:
    """Training losses kept on the device: checked for NaN/inf at log points, summed per epoch."""

    def __init__(self, device):
        self._pending: list[tuple[int, torch.Tensor]] = []  # (optimizer step, loss) since the last check
        self.interval_mean = float("nan")  # mean finite loss of the last checked interval
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)  # epoch: loss * n, top-1 hits, n
        self._t0 = time.time()

    def record(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep one micro-batch's loss (no host sync); add to the epoch sums. logits: [B, K]."""
        self._pending.append((step, loss))
        c1 = topk_correct(logits, targets, ks=(1,))[0]
        n = torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=loss.device)
        self._sums += torch.stack([loss.double() * targets.shape[0], c1.double(), n])

    def first_nonfinite(self, acc) -> int | None:
        """Bring the pending losses to the host: the first step with a NaN/inf loss on any rank, or None."""
        if not self._pending:
            return None
        vals = torch.stack([x[1].float() for x in self._pending]).cpu()
        finite = torch.isfinite(vals)
        bad = float(self._pending[int((~finite).nonzero()[0])][0]) if not finite.all() else float("inf")
        if acc.num_processes > 1:
            t = torch.tensor([bad], dtype=torch.float64, device=acc.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            bad = float(t)
        self.interval_mean = float(vals[finite].mean()) if finite.any() else float("nan")
        self._pending.clear()
        return None if bad == float("inf") else int(bad)

    def end_epoch(self, acc) -> dict:
        """The epoch's loss and top-1 over every rank, its seconds and images/s; starts the next epoch."""
        s = acc.reduce(self._sums.clone(), "sum").cpu()
        n, dt = max(float(s[2]), 1.0), time.time() - self._t0
        self._sums.zero_()
        self._t0 = time.time()
        return {"train_loss": float(s[0]) / n, "train_top1": float(s[1]) / n, "epoch_s": dt,
                "img_per_s": float(s[2]) / max(dt, 1e-9)}


def to_float(v: Any) -> float:
    """A metric value (tensor or number) as a Python float."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().cpu())
    return float(v)


class _Table:
    """Append-only CSV + JSONL pair; the CSV header grows when new keys appear (file rewritten once)."""

    def __init__(self, stem: Path, key: str, resume_from: int | None):
        self.csv, self.jsonl, self.key = stem.with_suffix(".csv"), stem.with_suffix(".jsonl"), key
        self.rows: list[dict] = []
        if self.jsonl.is_file() and resume_from is not None:  # drop records newer than the checkpoint
            for line in self.jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if row.get(key, 0) <= resume_from:
                    self.rows.append(row)
        self.fields = list(dict.fromkeys(k for r in self.rows for k in r))
        self._rewrite()

    def _rewrite(self) -> None:
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.fields]
        if new:
            self.fields += new
            self._rewrite()
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)


class RunLogger:
    """Step and epoch records to metrics/{steps,epochs}.{csv,jsonl} and TensorBoard (main process only)."""

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, step: int, epoch: int,
                 resumed: bool):
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        (out / "metrics").mkdir(parents=True, exist_ok=True)
        self.steps = _Table(out / "metrics" / "steps", "step", step if resumed else 0)
        self.epochs = _Table(out / "metrics" / "epochs", "epoch", epoch - 1 if resumed else -1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=step if resumed else None)

    def log_step(self, step: int, values: dict) -> dict:
        """Record one step's values (tensors converted); returns the float record."""
        row = {"step": step, **{k: to_float(v) for k, v in values.items()}}
        if self.enabled:
            self.steps.add(row)
            if self.tb is not None:
                for k, v in row.items():
                    if k != "step":
                        self.tb.add_scalar(f"step/{k}", v, step)
        return row

    def log_epoch(self, epoch: int, step: int, values: dict) -> dict:
        """Record one epoch's values; the TensorBoard x-axis is the optimizer step."""
        row = {"epoch": epoch, "step": step, **{k: to_float(v) for k, v in values.items()}}
        if self.enabled:
            self.epochs.add(row)
            if self.tb is not None:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        self.tb.add_scalar(f"epoch/{k}", v, step)
                self.tb.flush()
        return row

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """tqdm bar on the main process: loss, lr, images/s and the share of time spent waiting for data."""

    def __init__(self, enabled: bool, total: int, epoch: int, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch}", dynamic_ncols=True,
                            leave=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", lr=f"{row.get('lr', 0):.2e}",
                                 img_s=f"{row.get('img_per_s', 0):.1f}",
                                 wait=f"{100 * row.get('data_wait', 0):.0f}%", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StepTimer:
    """Wall time split into waiting for data and the rest, between two log points."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0, self.wait, self.samples = time.perf_counter(), 0.0, 0

    def rates(self) -> tuple[float, float]:
        """(images per second, share of wall time waiting for data) since the last reset."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return self.samples / dt, min(self.wait / dt, 1.0)
