"""What survives a restart: counters, best accuracy, RNG of every rank, and the checkpoint round trip.

`save` writes `last`/`best` with everything needed to continue bit for bit (model, optimizer, scheduler,
scaler, hooks, epoch, batch position, optimizer step, best accuracy, RNG states of all ranks, config,
versions); `restore` reads them back with weights_only loading.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from launch.checkpoint import (
    CheckpointLoadError,
    export_safetensors,
    load_checkpoint,
    plain_state_dict,
    resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
    versions,
)
from launch.config import to_dict
from launch.metrics import to_float
from launch.parts import topk_correct

IGNORED_ON_RESUME = ("train.resume", "train.output_dir", "train.test_only", "train.transfer",
                     "train.stop_after_steps", "train.save_every_steps", "log.")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def sync_buffers(model, acc) -> None:
    """Broadcast rank 0's buffers (BN statistics, firing-rate EMAs) to every rank."""
    if acc.num_processes > 1:
        for b in model.buffers():
            torch.distributed.broadcast(b, 0)


class TrainState:
    """Counters and checkpoint I/O of one `Trainer` (main process writes, every rank reads)."""

    def __init__(self, trainer):
        self.tr, self.acc = trainer, trainer.acc
        self.ckpt_dir = Path(trainer.cfg.train.output_dir) / "checkpoints"
        self.epoch = self.batch = self.step = 0  # epoch to run, micro-batches done in it, optimizer steps
        self.best_acc1, self.resumed = 0.0, False
        self.skipped_nonfinite = self.skipped_overflow = 0
        self.grad_norm, self.hook_metrics = None, {}
        self._losses: list[tuple[int, int, torch.Tensor]] = []  # (step, micro-batch, loss) since last check
        self._interval_mean = float("nan")
        self._epoch_sums = torch.zeros(3, dtype=torch.float64, device=self.acc.device)  # loss, top1, n
        self._epoch_t0, self._epoch_rec = time.time(), {}
        self._t0 = time.time()

    # ------------------------------------------------------------------------- per step
    def record_loss(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep the loss on the device (checked at log points); accumulate epoch sums."""
        self._losses.append((self.step, self.batch, loss))
        c1 = topk_correct(logits, targets, ks=(1,))[0]
        self._epoch_sums += torch.stack([loss.double() * targets.shape[0], c1.double(),
                                         torch.tensor(float(targets.shape[0]), dtype=torch.float64,
                                                      device=loss.device)])

    def check_finite(self) -> None:
        """Bring the pending losses to the host; stop (all ranks) if any is NaN/inf."""
        from launch.trainer import TrainingStopped

        if not self._losses:
            return
        vals = torch.stack([x[2].float() for x in self._losses]).cpu()
        finite = torch.isfinite(vals)
        bad = float(self._losses[int((~finite).nonzero()[0])][0]) if not finite.all() else float("inf")
        if self.acc.num_processes > 1:
            t = torch.tensor([bad], dtype=torch.float64, device=self.acc.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            bad = float(t)
        self._interval_mean = float(vals[finite].mean()) if finite.any() else float("nan")
        self._losses.clear()
        if bad != float("inf"):
            last = self.ckpt_dir / "last.pt"
            keep = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint written yet"
            raise TrainingStopped(f"non-finite loss at optimizer step {int(bad)} (epoch {self.epoch}); "
                                  "stopped; "
                                  f"{keep}; lower optim.lr or set train.nonfinite=skip", 3)

    def interval_loss(self) -> float:
        return self._interval_mean

    # ------------------------------------------------------------------------- per epoch
    def end_epoch(self, epoch: int, val: dict) -> None:
        """Reduce the epoch's train metrics, move the position to the next epoch, save last (and best)."""
        self.check_finite()
        s = self.acc.reduce(self._epoch_sums.clone(), "sum").cpu()
        n = max(float(s[2]), 1.0)
        dt = time.time() - self._epoch_t0
        self._epoch_rec = {"train_loss": float(s[0]) / n, "train_top1": float(s[1]) / n,
                           "lr": self.tr.optimizer.param_groups[0]["lr"], "epoch_s": dt,
                           "img_per_s": float(s[2]) / max(dt, 1e-9),
                           "skipped_overflow": self.skipped_overflow,
                           "skipped_nonfinite": self.skipped_nonfinite, **self.hook_metrics}
        self._epoch_sums.zero_()
        self._epoch_t0 = time.time()
        self.epoch, self.batch = epoch + 1, 0
        improved = bool(val) and val["val_top1"] > self.best_acc1
        if improved:
            self.best_acc1 = val["val_top1"]
        self._epoch_rec["best_acc1"] = self.best_acc1
        self.save("last")
        if improved and self.tr.cfg.train.keep_best:
            self.save("best")  # stores the new best accuracy, not the previous one

    def epoch_record(self) -> dict:
        return dict(self._epoch_rec)

    # ------------------------------------------------------------------------- checkpoints
    def _gather_rng(self) -> list:
        if self.acc.num_processes == 1:
            return [rng_state()]
        from accelerate.utils import gather_object

        return gather_object([rng_state()])

    def save(self, kind: str) -> Path:
        """Write checkpoints/<kind>.pt (+ .safetensors) atomically; collective over ranks."""
        self.check_finite()  # never save a state that already saw a NaN
        tr, acc = self.tr, self.acc
        rngs = self._gather_rng()
        path = self.ckpt_dir / f"{kind}.pt"
        if acc.is_main_process:
            state = {
                "model": tr.raw.state_dict(), "optimizer": tr.optimizer.state_dict(),
                "scheduler": tr.sched.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "hooks": {n: h.state_dict() for n, h in tr.hooks.items()},
                "epoch": self.epoch, "batch": self.batch, "step": self.step, "best_acc1": self.best_acc1,
                "rng": rngs, "world_size": acc.num_processes, "batch_size": tr.cfg.data.batch_size,
                "config": to_dict(tr.cfg), "versions": versions(), "kind": kind,
            }
            save_checkpoint(state, path)
            if tr.cfg.train.export_safetensors:
                export_safetensors(state["model"], path.with_suffix(".safetensors"),
                                   {"epoch": self.epoch, "step": self.step, "model": tr.cfg.model.name})
        acc.wait_for_everyone()
        return path

    def save_on_crash(self, micro: int) -> str:
        """After a loader failure: save the position if this process can do so alone; say where to resume."""
        last = self.ckpt_dir / "last.pt"
        if self.acc.num_processes == 1 and micro % self.tr.cfg.train.grad_accum == 0:
            self.batch = micro
            try:
                self.save("last")
                return f"state at this batch saved to {last}"
            except Exception as e:  # noqa: BLE001 - report, keep the original error
                return f"could not save ({type(e).__name__}); last checkpoint: {last}"
        return f"last checkpoint: {last}" if last.is_file() else "no checkpoint was written yet"

    def restore(self, resume: str | None) -> None:
        """Load `train.resume` (PATH or auto) into every part; a fresh start when auto finds nothing."""
        path = resume_path(resume, self.ckpt_dir)
        if path is None:
            if resume == "auto":
                self.acc.print(f"resume auto: no checkpoint in {self.ckpt_dir}; starting fresh")
            return
        sd = load_checkpoint(path)
        tr, acc = self.tr, self.acc
        try:
            tr.raw.load_state_dict(sd["model"])
        except RuntimeError as e:
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            why = " ".join(lines[1:3])[:300] or lines[0]  # torch's first line only says "Error(s) in ..."
            raise CheckpointLoadError(f"checkpoint {path} does not fit {tr.cfg.model.name}: {why}; use "
                                      "--transfer for another architecture or class count") from None
        tr.optimizer.load_state_dict(sd["optimizer"])
        tr.sched.load_state_dict(sd["scheduler"])
        if sd.get("scaler") and acc.scaler is not None:
            acc.scaler.load_state_dict(sd["scaler"])
        for name, hook in tr.hooks.items():
            if name in sd.get("hooks", {}):
                hook.load_state_dict(sd["hooks"][name])
            else:
                acc.print(f"resume: {path} has no state for hook {name}; it starts fresh")
        self.epoch, self.batch, self.step = sd["epoch"], sd["batch"], sd["step"]
        self.best_acc1, self.resumed = sd["best_acc1"], True
        self._restore_position(sd, path)
        self._note_config_changes(sd.get("config", {}), path)
        acc.print(f"resumed from {path}: epoch {self.epoch}, batch {self.batch}, step {self.step}, "
                  f"best top1 {self.best_acc1:.4f}")

    def _restore_position(self, sd: dict, path: Path) -> None:
        acc, n_old = self.acc, sd.get("world_size", 1)
        if n_old == acc.num_processes:
            set_rng_state(sd["rng"][acc.process_index])
            return
        samples = self.batch * sd.get("batch_size", self.tr.cfg.data.batch_size) * n_old
        self.batch = samples // (self.tr.cfg.data.batch_size * acc.num_processes)
        self.batch -= self.batch % self.tr.cfg.train.grad_accum
        acc.print(f"resume: {path} was written by {n_old} process(es), now {acc.num_processes}: "
                  f"continuing at batch {self.batch} of epoch {self.epoch} (not bit-exact)")

    def _note_config_changes(self, old: dict, path: Path) -> None:
        a, b = _flat(old), _flat(to_dict(self.tr.cfg))
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                and not any(k.startswith(p) for p in IGNORED_ON_RESUME)]
        if diff:
            self.acc.print(f"resume: config differs from {path} in {', '.join(diff[:6])}"
                           + (" ..." if len(diff) > 6 else ""))

    # ------------------------------------------------------------------------- end of training
    def sync_buffers(self) -> None:
        """Rank 0's buffers (BN statistics, firing-rate EMAs) on every rank."""
        sync_buffers(self.tr.raw, self.acc)

    def finish(self) -> None:
        """Sync buffers, compare ranks, optional per-rank weights, write summary.json."""
        self.check_finite()
        self.sync_buffers()
        tr, acc, t = self.tr, self.acc, self.tr.cfg.train
        sd = plain_state_dict(tr.raw.state_dict())
        if t.save_rank_weights:
            export_safetensors(sd, Path(t.output_dir) / f"final_rank{acc.process_index}.safetensors")
        consistent = None
        if tr.cfg.log.rank_consistency and acc.num_processes > 1:
            h = hashlib.sha256()
            for k in sorted(sd):
                h.update(k.encode())
                h.update(sd[k].reshape(-1).view(torch.uint8).numpy().tobytes() if sd[k].numel() else b"")
            from accelerate.utils import gather_object

            digests = gather_object([h.hexdigest()])
            consistent = len(set(digests)) == 1
            if not consistent:
                print(f"dassdp-train: WARNING: ranks ended with different weights {digests}", file=sys.stderr)
        if acc.is_main_process:
            summary = {"epochs": self.epoch, "steps": self.step, "best_acc1": self.best_acc1,
                       "wall_s": time.time() - self._t0, "ranks_consistent": consistent,
                       "skipped_overflow": self.skipped_overflow, "skipped_nonfinite": self.skipped_nonfinite,
                       **{k: to_float(v) for k, v in self._epoch_rec.items()}}
            (Path(t.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(f"done: {self.step} steps, best top1 {self.best_acc1:.4f}, ranks consistent: {consistent}, "
                  f"run folder {t.output_dir}", file=sys.stderr)
