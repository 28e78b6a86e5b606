"""The training loop over parts it is handed (built by `launch.build`): AMP, hooks after real steps.

One step: forward (observers of hooks record) -> loss on the T-mean of the logits -> backward (no DDP
all-reduce between accumulation boundaries) -> at a boundary: clip, optimizer step; if the step really
happened (not an AMP-overflow skip): scheduler update, hooks' `after_optimizer_step` -> neuron reset.
After each real step (and each epoch) the ranks agree whether to stop (`launch.preempt`: a signal or the
time limit); if so, every rank saves `last` at that step and the run ends with status 75, resumable.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
from spikingjelly.activation_based import functional as sj_functional

from launch.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, TrainingStopped
from launch.finish import finish, sync_buffers
from launch.metrics import LossTracker, ProgressBar, StepTimer, topk_correct
from launch.preempt import StopRequest
from pipelines import DataError


def close_iter(it) -> None:
    """Stop a loader iterator left before its end (generators and ffcv/DALI iterators have `close`)."""
    close = getattr(it, "close", None)
    if callable(close):
        close()


class Trainer:
    """Runs epochs over the parts it is handed; `progress` is where the run stands, `ckpt` saves it."""

    def __init__(self, cfg, acc, *, model, raw, val_loader, train_loader=None, criterion=None, optimizer=None,
                 sched=None, hooks=None, progress=None, ckpt=None, log=None, n_micro: int = 0,
                 stop: StopRequest | None = None):
        self.cfg, self.acc = cfg, acc
        self.model, self.raw = model, raw  # prepared (DDP/compiled) and the plain module inside
        self.train_loader, self.val_loader, self.criterion = train_loader, val_loader, criterion
        self.optimizer, self.sched = optimizer, sched  # sched: timm's, stepped with absolute indices
        self.hooks, self.progress, self.ckpt, self.log = hooks or {}, progress, ckpt, log
        self.n_micro, self.steps_per_epoch = n_micro, math.ceil(n_micro / cfg.train.grad_accum)
        self.losses = LossTracker(acc.device)
        self.grad_norm, self.hook_metrics, self.last_epoch = None, {}, {}
        self.stop = stop or StopRequest(env={})  # the default never stops: no handlers, no deadline
        self._t0 = time.time()

    # ------------------------------------------------------------------------- the loop
    def fit(self) -> int:
        """Train from the current progress to train.epochs; returns the exit status."""
        t, p = self.cfg.train, self.progress
        self.acc.print(f"training {self.cfg.model.name}: {self.steps_per_epoch} steps/epoch x {t.epochs} "
                       f"epochs on {self.acc.num_processes} process(es), device {self.acc.device}, "
                       f"precision {self.acc.mixed_precision}, hooks {list(self.hooks) or 'none'}")
        try:
            self.stop_if_asked(save=False, timed=False)  # a signal during the build: nothing new to save
            for epoch in range(p.epoch, t.epochs):
                if not self.train_epoch(epoch):
                    return 0  # train.stop_after_steps reached: state saved
                self.sched.step(epoch + 1)
                with self.stop.timing("eval"):
                    val = self.evaluate() if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs else {}
                self.end_epoch(epoch, val)
                self.log.log_epoch(epoch, p.step, {**self.last_epoch, **val})
                if self.acc.is_main_process and val:
                    print(f"epoch {epoch}: val loss {val['val_loss']:.4f} top1 {val['val_top1']:.4f} "
                          f"top5 {val['val_top5']:.4f} (best {p.best_acc1:.4f}), eval {self.eval_precision}",
                          file=sys.stderr)
                if epoch + 1 < t.epochs:
                    self.stop_if_asked(save=False)  # end_epoch saved `last` at this very position
            self.check_finite()
            finish(self.raw, self.acc, p, output_dir=t.output_dir, wall_s=time.time() - self._t0,
                   last_epoch=self.last_epoch, rank_weights=t.save_rank_weights,
                   compare_ranks=self.cfg.log.rank_consistency, precision=self.precision)
        finally:
            self.log.close()
            for hook in self.hooks.values():
                hook.close()
        return 0

    def train_epoch(self, epoch: int) -> bool:
        """One epoch from the progress' batch position; False when train.stop_after_steps ended the run."""
        t, p, acc = self.cfg.train, self.progress, self.acc
        start = p.batch
        self.train_loader.set_epoch(epoch, start_batch=start)
        self.model.train()
        bar = ProgressBar(acc.is_main_process and self.cfg.log.progress, self.steps_per_epoch, epoch,
                          initial=start // t.grad_accum)
        it, timer = iter(self.train_loader), StepTimer()
        try:
            for i in range(start, self.n_micro):
                t0 = time.perf_counter()
                images, targets = self._next_batch(it, epoch, i)
                timer.wait += time.perf_counter() - t0
                timer.samples += images.shape[0] * acc.num_processes
                p.samples += images.shape[0] * acc.num_processes
                boundary = (i + 1) % t.grad_accum == 0 or i + 1 == self.n_micro
                stepped = self.train_step(images, targets, boundary, epoch)
                p.batch = i + 1
                if not stepped:
                    continue
                bar.update()
                if p.step % self.cfg.log.every_steps == 0:
                    bar.show(self._log_step(epoch, timer))
                self.stop_if_asked(save=True)
                periodic = bool(t.save_every_steps) and p.step % t.save_every_steps == 0
                if periodic:
                    self.save("last")
                if t.stop_after_steps is not None and p.step >= t.stop_after_steps:
                    if not periodic:  # once per step: a second save would make last.prev.pt this same step
                        self.save("last")
                    acc.print(f"stopped after {p.step} steps (train.stop_after_steps); "
                              "resume with --resume auto")
                    return False
        finally:
            bar.close()
            close_iter(it)
        return True

    def train_step(self, images, targets, boundary: bool, epoch: int) -> bool:
        """Forward/backward one micro-batch; optimizer step at a boundary. True if a real step happened."""
        t, acc, p = self.cfg.train, self.acc, self.progress
        with contextlib.nullcontext() if boundary else acc.no_sync(self.model):
            with acc.autocast():
                out = self.model(images)  # [T, B, K]
                loss = self.criterion(out, targets)
            if t.nonfinite == "skip" and not self._finite_everywhere(loss):
                p.skipped_nonfinite += 1
                self.optimizer.zero_grad(set_to_none=True)
                sj_functional.reset_net(self.raw)
                return False
            acc.backward(loss / t.grad_accum)
        self.losses.record(p.step, loss.detach(), out.detach().mean(0), targets)
        stepped = False
        if boundary:
            if self.cfg.optim.clip_grad:
                self.grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            self.optimizer.step()
            stepped = not self.optimizer.step_was_skipped  # AMP overflow: no real step, no hooks
            self.optimizer.zero_grad(set_to_none=True)
            if stepped:
                self.sched.step_update(p.step + 1)
                self._after_optimizer_step(loss.detach(), epoch)
                p.step += 1
            else:
                p.skipped_overflow += 1
        sj_functional.reset_net(self.raw)
        return stepped

    @torch.no_grad()
    def _after_optimizer_step(self, loss: torch.Tensor, epoch: int) -> None:
        """Every hook, on the unwrapped model; their metrics prefixed with the hook's name."""
        for name, hook in self.hooks.items():
            m = hook.after_optimizer_step(self.raw, loss=loss, epoch=epoch, step=self.progress.step)
            self.hook_metrics.update({k if k.startswith(f"{name}/") else f"{name}/{k}": v
                                      for k, v in (m or {}).items()})

    def _next_batch(self, it, epoch: int, i: int):
        try:
            return next(it)
        except StopIteration:
            raise TrainingStopped(f"the training loader ended after {i} of {self.n_micro} batches in epoch "
                                  f"{epoch}: its len() is wrong; check data.path={self.cfg.data.path}",
                                  4) from None
        except Exception as e:  # a crashed worker, a decode error: keep a usable checkpoint, then stop
            where = self._save_on_crash(i)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            code = EXIT_BAD_INPUT if isinstance(e, DataError) else 5  # DataError: a named damaged file
            raise TrainingStopped(f"data loader failed in epoch {epoch} at batch {i}: {type(e).__name__}: "
                                  f"{first}; {where}; fix the data and rerun with --resume auto", code) from e

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        return bool(self.acc.reduce(bad, "sum").item() == 0)

    def _log_step(self, epoch: int, timer: StepTimer) -> dict:
        self.check_finite()  # the interval's losses reach the host here (one sync per log interval)
        img_s, wait = timer.rates()
        timer.reset()
        lr = self.optimizer.param_groups[0]["lr"]
        values = {"epoch": epoch, "loss": self.losses.interval_mean, "lr": lr, "img_per_s": img_s,
                  "data_wait": wait, **self.hook_metrics}
        if self.grad_norm is not None:
            values["grad_norm"] = self.grad_norm
        return self.log.log_step(self.progress.step, values)

    # ------------------------------------------------------------------------- progress and checkpoints
    def check_finite(self) -> None:
        """Stop (every rank) when a loss since the last check was NaN/inf; the last good checkpoint stays."""
        bad = self.losses.first_nonfinite(self.acc)
        if bad is None:
            return
        last = self.ckpt.last
        keep = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint written yet"
        raise TrainingStopped(f"non-finite loss at optimizer step {bad} (epoch {self.progress.epoch}); "
                              f"stopped; {keep}; lower optim.lr or set train.nonfinite=skip", 3)

    def save(self, kind: str) -> None:
        """checkpoints/<kind>.pt of the current progress (never a state that already saw a NaN)."""
        self.check_finite()
        with self.stop.timing("save"):
            self.ckpt.save(kind, self.progress)

    def stop_if_asked(self, save: bool, timed: bool = True) -> None:
        """If the ranks agree to stop (signal, time limit): `last` of this step (if `save`), exit 75."""
        why = self.stop.requested(self.acc, timed)
        if why is None:
            return
        p = self.progress
        if save:
            self.save("last")
        where = f"state saved to {self.ckpt.last}" if self.ckpt.last.is_file() else "no checkpoint yet"
        raise TrainingStopped(f"{why}: stopped at step {p.step} (epoch {p.epoch}, batch {p.batch}), {where}; "
                              f"rerun with --resume auto to continue (exit status {EXIT_PREEMPTED})",
                              EXIT_PREEMPTED)

    def _save_on_crash(self, micro: int) -> str:
        """After a loader failure: save the position if this process can do so alone; say where to resume."""
        last = self.ckpt.last
        if self.acc.num_processes == 1 and micro % self.cfg.train.grad_accum == 0:
            self.progress.batch = micro
            try:
                self.save("last")
                return f"state at this batch saved to {last}"
            except Exception as e:  # noqa: BLE001 - report, keep the original error
                return f"could not save ({type(e).__name__}); last checkpoint: {last}"
        return f"last checkpoint: {last}" if last.is_file() else "no checkpoint was written yet"

    def end_epoch(self, epoch: int, val: dict) -> None:
        """Reduce the epoch's train metrics, move to the next epoch, save last (and best when improved)."""
        self.check_finite()
        p = self.progress
        rec = self.losses.end_epoch(self.acc)
        self.last_epoch = {"train_loss": rec["train_loss"], "train_top1": rec["train_top1"],
                           "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": rec["epoch_s"],
                           "img_per_s": rec["img_per_s"], "skipped_overflow": p.skipped_overflow,
                           "skipped_nonfinite": p.skipped_nonfinite, **self.hook_metrics}
        p.epoch, p.batch = epoch + 1, 0
        improved = bool(val) and val["val_top1"] > p.best_acc1
        if improved:
            p.best_acc1 = val["val_top1"]
        self.last_epoch["best_acc1"] = p.best_acc1
        self.save("last")
        if improved and self.cfg.train.keep_best:
            self.save("best")  # stores the new best accuracy, not the previous one

    # ------------------------------------------------------------------------- evaluation
    @property
    def precision(self) -> dict:
        """The dtypes of training and evaluation, as the run records them."""
        mp = self.acc.mixed_precision
        return {"train": "fp32" if mp == "no" else mp, "eval": self.eval_precision}

    @property
    def eval_precision(self) -> str:
        """Evaluation's dtype: the training autocast dtype with train.eval_amp, else fp32 (the official)."""
        mp = self.acc.mixed_precision
        return mp if self.cfg.train.eval_amp and mp != "no" else "fp32"

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss, top-1 and top-5 over the whole split, summed over ranks (in `eval_precision`)."""
        model, acc = self.raw, self.acc
        autocast = acc.autocast if self.eval_precision != "fp32" else contextlib.nullcontext
        sync_buffers(model, acc)
        model.eval()
        if hasattr(self.val_loader, "set_epoch"):
            self.val_loader.set_epoch(0)
        sums = torch.zeros(4, dtype=torch.float64, device=acc.device)  # loss, top1, top5, n
        it = iter(self.val_loader)
        for j, (images, targets) in enumerate(it):
            if self.cfg.train.eval_batches is not None and j >= self.cfg.train.eval_batches:
                close_iter(it)  # a loader left mid-epoch must stop its threads (ffcv, DALI)
                break
            with autocast():
                logits = model(images).mean(0).float()  # [B, K]
            c1, c5 = topk_correct(logits, targets)
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            n = torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=acc.device)
            sums += torch.stack([loss.double(), c1.double(), c5.double(), n])
            sj_functional.reset_net(model)
        sums = acc.reduce(sums, "sum").cpu()
        model.train()
        n = max(float(sums[3]), 1.0)
        return {"val_loss": float(sums[0]) / n, "val_top1": float(sums[1]) / n,
                "val_top5": float(sums[2]) / n, "val_samples": float(sums[3])}

    def test_only(self) -> int:
        """Evaluate the loaded weights and print the SOP / energy / firing-rate table."""
        from pathlib import Path

        from models import sops

        val = self.evaluate()
        self.acc.print(f"test: loss {val['val_loss']:.4f} top1 {val['val_top1']:.4f} "
                       f"top5 {val['val_top5']:.4f} on {int(val['val_samples'])} samples, "
                       f"eval {self.eval_precision}")
        if self.acc.is_main_process:
            it = iter(self.val_loader)
            images, _ = next(it)
            close_iter(it)
            self.raw.eval()
            with torch.no_grad():
                table = sops.measure(self.raw, images)
            sj_functional.reset_net(self.raw)
            print(sops.format_table(table))
            out = Path(self.cfg.train.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "test.txt").write_text(
                f"top1 {val['val_top1']:.6f}\ntop5 {val['val_top5']:.6f}\neval {self.eval_precision}\n"
                f"{sops.format_table(table)}\n")
        return 0
