"""The training loop: accelerate-prepared model/optimizer/scheduler, AMP, hooks after real optimizer steps.

One step: forward (observers of hooks record) -> loss on the T-mean of the logits -> backward (no DDP
all-reduce between accumulation boundaries) -> at a boundary: clip, optimizer step; if the step really
happened (not an AMP-overflow skip): scheduler update, hooks' `after_optimizer_step` -> neuron reset.
"""
from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from pathlib import Path

import torch
from spikingjelly.activation_based import functional as sj_functional

from launch import parts
from launch.checkpoint import CheckpointLoadError, versions
from launch.config import Config, ConfigError, to_yaml
from launch.metrics import Progress, RunLogger, StepTimer, write_run_info
from launch.state import TrainState, sync_buffers


class TrainingStopped(Exception):
    """The run must end early; `code` is the exit status, the message says why and what to do."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def close_iter(it) -> None:
    """Stop a loader iterator left before its end (generators and ffcv/DALI iterators have `close`)."""
    close = getattr(it, "close", None)
    if callable(close):
        close()


def build_accelerator(cfg: Config):
    """Accelerator from `train:` (precision, compile); device and process group from the launcher."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    mp = cfg.train.amp_dtype if cfg.train.amp else "no"
    if mp == "fp16" and not torch.cuda.is_available():
        print("dassdp-train: train.amp_dtype=fp16 needs CUDA; using bf16 autocast on this CPU",
              file=sys.stderr)
        mp = "bf16"
    ddp = DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)
    return Accelerator(mixed_precision=mp, step_scheduler_with_optimizer=False, kwargs_handlers=[ddp])


def run(cfg: Config) -> int:
    """Train (or evaluate with train.test_only) as configured; returns the exit status."""
    acc = build_accelerator(cfg)
    trainer = None
    try:
        trainer = Trainer(cfg, acc)
        return trainer.test_only() if cfg.train.test_only else trainer.fit()
    except TrainingStopped as stop:
        print(f"dassdp-train: {stop}", file=sys.stderr)
        return stop.code
    except CheckpointLoadError as err:
        print(f"dassdp-train: {err}", file=sys.stderr)
        return 2
    finally:
        acc.end_training()
        # Free the prepared model (and with it the process group it holds) now, while the interpreter is
        # alive. Left to the collector at interpreter shutdown, gloo's worker threads could still be
        # releasing a finished collective's tensors, which needs the GIL: that thread then exits
        # mid-destructor and std::terminate aborts a run that had finished correctly.
        trainer = None
        acc.free_memory()
        gc.collect()


class Trainer:
    """Holds the prepared parts and runs epochs; state that survives a restart lives in `TrainState`."""

    def __init__(self, cfg: Config, accelerator):
        from accelerate.utils import set_seed

        from launch.datasets import ensure_data

        self.cfg, self.acc, t = cfg, accelerator, cfg.train
        self.out = Path(t.output_dir)
        set_seed(t.seed)  # same seed on every rank: identical init (DDP also broadcasts rank 0's weights)
        if t.cpu_malloc_reuse and accelerator.device.type == "cpu":
            from launch.cpu_malloc import keep_freed_memory

            keep_freed_memory()  # no page-fault churn on every step's activations (see its module doc)
        torch.backends.cudnn.deterministic = t.deterministic
        torch.backends.cudnn.benchmark = not t.deterministic
        with accelerator.main_process_first():
            ensure_data(cfg.data, main=accelerator.is_main_process)
        model = parts.build_model(cfg)
        self._load_initial_weights(model)
        if t.sync_bn and accelerator.num_processes > 1:  # needs CUDA (SyncBatchNorm has no CPU kernel)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.train_loader, self.val_loader = parts.build_loaders(cfg, accelerator, need_train=not t.test_only)
        self.criterion = parts.build_criterion(cfg)
        self.hooks = parts.build_hooks(cfg)
        if t.test_only:
            self.model = self.raw = accelerator.prepare(model.to(accelerator.device))
            self.raw = accelerator.unwrap_model(self.model, keep_torch_compile=False)
            return
        n_micro = len(self.train_loader)
        if t.max_steps_per_epoch:
            n_micro = min(n_micro, t.max_steps_per_epoch * t.grad_accum)
        if n_micro < 1:
            raise ConfigError(f"data.path={cfg.data.path}: the training loader yields no batch per process; "
                              "lower data.batch_size or check the dataset")
        self.n_micro, self.steps_per_epoch = n_micro, math.ceil(n_micro / t.grad_accum)
        optimizer = parts.build_optimizer(model, cfg.optim)
        sched = parts.build_scheduler(optimizer, cfg.sched, epochs=t.epochs,
                                      steps_per_epoch=self.steps_per_epoch)
        if cfg.model.compile:  # hooks attach to the plain module inside (unwrap_model below)
            import models

            model = models.compile_model(model.to(accelerator.device))
        self.model, self.optimizer, self.prepared_sched = accelerator.prepare(model, optimizer, sched)
        # timm schedulers take absolute epoch/update indices: step the wrapped one directly, not the
        # AcceleratedScheduler (which repeats steps per process and drops them after skipped optimizer steps).
        self.sched = sched
        self.raw = accelerator.unwrap_model(self.model, keep_torch_compile=False)
        for hook in self.hooks.values():
            hook.setup(self.raw, steps_per_epoch=self.steps_per_epoch)
        self.state = TrainState(self)
        self.state.restore(t.resume)
        if accelerator.is_main_process:
            write_run_info(self.out, to_yaml(cfg), versions(), {"world_size": accelerator.num_processes,
                                                               "resumed_from_step": self.state.step})
        self.log = RunLogger(self.out, enabled=accelerator.is_main_process, tensorboard=cfg.log.tensorboard,
                             step=self.state.step, epoch=self.state.epoch, resumed=self.state.resumed)

    # ------------------------------------------------------------------------- weights before training
    def _load_initial_weights(self, model) -> None:
        import models

        t, say = self.cfg.train, self.acc.print  # model.pretrained was loaded by models.build_model
        if t.transfer and not t.test_only:
            say("transfer: " + models.load_weights(model, t.transfer, transfer=True).summary())
        if t.test_only and t.resume:
            path = self._test_checkpoint(t.resume)
            say(f"test-only: {path}: " + models.load_weights(model, str(path)).summary())

    def _test_checkpoint(self, resume: str) -> Path:
        if resume != "auto":
            return Path(resume)
        for name in ("best.pt", "last.pt"):
            if (self.out / "checkpoints" / name).is_file():
                return self.out / "checkpoints" / name
        raise CheckpointLoadError(f"--test-only --resume auto: no best.pt or last.pt in "
                                  f"{self.out}/checkpoints")

    # ------------------------------------------------------------------------- the loop
    def fit(self) -> int:
        """Train from the current state to train.epochs; returns the exit status."""
        t, st = self.cfg.train, self.state
        self.acc.print(f"training {self.cfg.model.name}: {self.steps_per_epoch} steps/epoch x {t.epochs} "
                       f"epochs on {self.acc.num_processes} process(es), device {self.acc.device}, "
                       f"precision {self.acc.mixed_precision}, hooks {list(self.hooks) or 'none'}")
        try:
            for epoch in range(st.epoch, t.epochs):
                if not self.train_epoch(epoch):
                    return 0  # train.stop_after_steps reached: state saved
                self.sched.step(epoch + 1)
                val = self.evaluate() if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs else {}
                st.end_epoch(epoch, val)
                self.log.log_epoch(epoch, st.step, {**st.epoch_record(), **val})
                if self.acc.is_main_process and val:
                    print(f"epoch {epoch}: val loss {val['val_loss']:.4f} top1 {val['val_top1']:.4f} "
                          f"top5 {val['val_top5']:.4f} (best {st.best_acc1:.4f})", file=sys.stderr)
            st.finish()
        finally:
            self.log.close()
            for hook in self.hooks.values():
                getattr(hook, "close", lambda: None)()
        return 0

    def train_epoch(self, epoch: int) -> bool:
        """One epoch from the state's batch position; False when train.stop_after_steps ended the run."""
        t, st, acc = self.cfg.train, self.state, self.acc
        start = st.batch
        self.train_loader.set_epoch(epoch, start_batch=start)
        self.model.train()
        bar = Progress(acc.is_main_process and self.cfg.log.progress, self.steps_per_epoch, epoch,
                       initial=start // t.grad_accum)
        it, timer = iter(self.train_loader), StepTimer()
        try:
            for i in range(start, self.n_micro):
                t0 = time.perf_counter()
                images, targets = self._next_batch(it, epoch, i)
                timer.wait += time.perf_counter() - t0
                timer.samples += images.shape[0] * acc.num_processes
                boundary = (i + 1) % t.grad_accum == 0 or i + 1 == self.n_micro
                stepped = self.train_step(images, targets, boundary, epoch)
                st.batch = i + 1
                if not stepped:
                    continue
                bar.update()
                if st.step % self.cfg.log.every_steps == 0:
                    bar.show(self._log_step(epoch, timer))
                if t.save_every_steps and st.step % t.save_every_steps == 0:
                    st.save("last")
                if t.stop_after_steps is not None and st.step >= t.stop_after_steps:
                    st.save("last")
                    acc.print(f"stopped after {st.step} steps (train.stop_after_steps); "
                              "resume with --resume auto")
                    return False
        finally:
            bar.close()
            close_iter(it)
        return True

    def _next_batch(self, it, epoch: int, i: int):
        try:
            return next(it)
        except StopIteration:
            raise TrainingStopped(f"the training loader ended after {i} of {self.n_micro} batches in epoch "
                                  f"{epoch}: its len() is wrong; check data.path={self.cfg.data.path}",
                                  4) from None
        except Exception as e:  # a crashed worker, a decode error: keep a usable checkpoint, then stop
            where = self.state.save_on_crash(i)
            raise TrainingStopped(f"data loader failed in epoch {epoch} at batch {i}: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; "
                                  f"{where}; fix the data and rerun with --resume auto", 5) from e

    def train_step(self, images, targets, boundary: bool, epoch: int) -> bool:
        """Forward/backward one micro-batch; optimizer step at a boundary. True if a real step happened."""
        t, acc, st = self.cfg.train, self.acc, self.state
        sync = contextlib.nullcontext() if boundary else acc.no_sync(self.model)
        with sync:
            with acc.autocast():
                out = self.model(images)  # [T, B, K]
                loss = self.criterion(out, targets)
            if t.nonfinite == "skip" and not self._finite_everywhere(loss):
                st.skipped_nonfinite += 1
                self.optimizer.zero_grad(set_to_none=True)
                sj_functional.reset_net(self.raw)
                return False
            acc.backward(loss / t.grad_accum)
        st.record_loss(loss.detach(), out.detach().mean(0), targets)
        stepped = False
        if boundary:
            if self.cfg.optim.clip_grad:
                st.grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            self.optimizer.step()
            stepped = not self.optimizer.step_was_skipped  # AMP overflow: no real step, no hooks
            self.optimizer.zero_grad(set_to_none=True)
            if stepped:
                self.sched.step_update(st.step + 1)
                with torch.no_grad():
                    for name, hook in self.hooks.items():
                        m = hook.after_optimizer_step(self.raw, loss=loss.detach(), epoch=epoch, step=st.step)
                        st.hook_metrics.update({k if k.startswith(f"{name}/") else f"{name}/{k}": v
                                                for k, v in (m or {}).items()})
                st.step += 1
            else:
                st.skipped_overflow += 1
        sj_functional.reset_net(self.raw)
        return stepped

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        return bool(self.acc.reduce(bad, "sum").item() == 0)

    def _log_step(self, epoch: int, timer: StepTimer) -> dict:
        st = self.state
        st.check_finite()  # the interval's losses reach the host here (one sync per log interval)
        img_s, wait = timer.rates()
        timer.reset()
        values = {"epoch": epoch, "loss": st.interval_loss(), "lr": self.optimizer.param_groups[0]["lr"],
                  "img_per_s": img_s, "data_wait": wait, **st.hook_metrics}
        if st.grad_norm is not None:
            values["grad_norm"] = st.grad_norm
        return self.log.log_step(st.step, values)

    # ------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss, top-1 and top-5 over the whole split, summed over ranks."""
        model, acc = self.raw, self.acc
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
            with acc.autocast():
                logits = model(images).mean(0).float()  # [B, K]
            c1, c5 = parts.topk_correct(logits, targets)
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
        from models import sops

        val = self.evaluate()
        self.acc.print(f"test: loss {val['val_loss']:.4f} top1 {val['val_top1']:.4f} "
                       f"top5 {val['val_top5']:.4f} on {int(val['val_samples'])} samples")
        if self.acc.is_main_process:
            it = iter(self.val_loader)
            images, _ = next(it)
            close_iter(it)
            self.raw.eval()
            with torch.no_grad():
                table = sops.measure(self.raw, images)
            sj_functional.reset_net(self.raw)
            print(sops.format_table(table))
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "test.txt").write_text(
                f"top1 {val['val_top1']:.6f}\ntop5 {val['val_top5']:.6f}\n{sops.format_table(table)}\n")
        return 0
