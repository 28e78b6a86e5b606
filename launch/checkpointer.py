"""Saving and restoring a run: the checkpointer is handed the stateful parts and asks each for its state.

It holds the model (unwrapped), optimizer, scheduler, the accelerator's scaler, the hooks by name and
the plain config dict, and nothing else: the position and counters come in a `TrainProgress`, RNG states
are read from every rank at save time. The file layout is `launch.checkpoint`'s. On restore it also
re-shards the position when the process count changed and notes the config keys that differ; `auto`
falls back from a damaged `last.pt` to the newest good checkpoint kept (see `launch.checkpoint`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from launch.checkpoint import (
    export_safetensors,
    load_checkpoint,
    previous_path,
    resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
    versions,
)
from launch.errors import CheckpointLoadError
from launch.progress import TrainProgress

IGNORED_ON_RESUME = ("train.resume", "train.output_dir", "train.test_only", "train.transfer",
                     "train.stop_after_steps", "train.save_every_steps", "train.time_limit", "log.")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


class Checkpointer:
    """checkpoints/<kind>.pt (+ .safetensors) of the parts it is handed; collective over ranks."""

    def __init__(self, ckpt_dir: Path, acc, *, model: torch.nn.Module, optimizer, scheduler, hooks: dict,
                 config: dict, export: bool = True):
        self.dir, self.acc = Path(ckpt_dir), acc
        self.model, self.optimizer, self.scheduler, self.hooks = model, optimizer, scheduler, hooks
        self.config, self.export = config, export  # config: the resolved config as a plain dict
        self.last_damaged = False  # resume auto found last.pt damaged: the next save sets it aside

    @property
    def last(self) -> Path:
        """checkpoints/last.pt."""
        return self.dir / "last.pt"

    def _gather_rng(self) -> list:
        if self.acc.num_processes == 1:
            return [rng_state()]
        from accelerate.utils import gather_object

        return gather_object([rng_state()])

    def save(self, kind: str, progress: TrainProgress) -> Path:
        """Write checkpoints/<kind>.pt atomically (main process), every rank's RNG included."""
        acc, scaler = self.acc, self.acc.scaler
        rngs = self._gather_rng()
        path = self.dir / f"{kind}.pt"
        if acc.is_main_process:
            state = {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "hooks": {n: h.state_dict() for n, h in self.hooks.items()},
                **progress.as_dict(),
                "rng": rngs, "world_size": acc.num_processes, "batch_size": self.config["data"]["batch_size"],
                "config": self.config, "versions": versions(), "kind": kind,
            }
            save_checkpoint(state, path, keep_previous=kind == "last",
                            replaces_damaged=kind == "last" and self.last_damaged)
            if self.export:
                export_safetensors(state["model"], path.with_suffix(".safetensors"),
                                   {"epoch": progress.epoch, "step": progress.step,
                                    "model": self.config["model"]["name"]})
        acc.wait_for_everyone()
        self.last_damaged = self.last_damaged and kind != "last"
        return path

    def restore(self, resume: str | None, progress: TrainProgress) -> bool:
        """Load `train.resume` (PATH or auto) into every part and `progress`; False for a fresh start."""
        if resume == "auto":
            found = self._auto()
            if found is None:
                self.acc.print(f"resume auto: no checkpoint in {self.dir}; starting fresh")
                return False
            path, sd = found
        else:
            path = resume_path(resume, self.dir)
            if path is None:
                return False
            sd = self._usable(path)
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        if sd.get("scaler") and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(sd["scaler"])
        for name, hook in self.hooks.items():
            if name in sd.get("hooks", {}):
                hook.load_state_dict(sd["hooks"][name])
            else:
                self.acc.print(f"resume: {path} has no state for hook {name}; it starts fresh")
        progress.load(sd)
        self._restore_position(sd, path, progress)
        self._note_config_changes(sd.get("config", {}), path)
        self.acc.print(f"resumed from {path}: epoch {progress.epoch}, batch {progress.batch}, "
                       f"step {progress.step}, best top1 {progress.best_acc1:.4f}")
        return True

    def _usable(self, path: Path) -> dict:
        """The checkpoint at `path`, read, verified and its weights loaded into the model."""
        sd = load_checkpoint(path)
        self._load_model(sd["model"], path)
        return sd

    def _auto(self) -> tuple[Path, dict] | None:
        """`last.pt`, else (damaged or absent) the newest good of `last.prev.pt` and `best.pt`; None: none."""
        last, why = self.last, f"no {self.last.name}"
        if last.is_file():
            try:
                return last, self._usable(last)
            except CheckpointLoadError as e:
                why, self.last_damaged = str(e), True
        good, errors = [], [why] if self.last_damaged else []
        for p in (previous_path(last), self.dir / "best.pt"):
            if p.is_file():
                try:
                    good.append((self._usable(p).get("step", 0), p))
                except CheckpointLoadError as e:
                    errors.append(str(e))
        if not good:
            if errors:
                raise CheckpointLoadError(f"resume auto: no usable checkpoint in {self.dir}: "
                                          f"{' | '.join(errors)}; move these files away to start fresh or "
                                          "pass --resume PATH")
            return None
        step, path = max(good)
        self.acc.print(f"resume auto: {why}; resuming from {path} (step {step}), the newest good checkpoint "
                       f"kept" + (f"; {last.name} stays until the next checkpoint is written, then is kept "
                                  f"as {last.name}.damaged-<time>" if self.last_damaged else ""))
        return path, self._usable(path)

    def _load_model(self, weights: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            why = " ".join(lines[1:3])[:300] or lines[0]  # torch's first line only says "Error(s) in ..."
            name = self.config["model"]["name"]
            raise CheckpointLoadError(f"checkpoint {path} does not fit {name}: {why}; use --transfer for "
                                      "another architecture or class count") from None

    def _restore_position(self, sd: dict, path: Path, progress: TrainProgress) -> None:
        """Same process count: this rank's RNG; another count: the same sample position, re-sharded."""
        acc, n_old = self.acc, sd.get("world_size", 1)
        if n_old == acc.num_processes:
            set_rng_state(sd["rng"][acc.process_index])
            return
        batch_size, grad_accum = self.config["data"]["batch_size"], self.config["train"]["grad_accum"]
        samples = progress.batch * sd.get("batch_size", batch_size) * n_old
        progress.batch = samples // (batch_size * acc.num_processes)
        progress.batch -= progress.batch % grad_accum
        acc.print(f"resume: {path} was written by {n_old} process(es), now {acc.num_processes}: "
                  f"continuing at batch {progress.batch} of epoch {progress.epoch} (not bit-exact)")

    def _note_config_changes(self, old: dict, path: Path) -> None:
        a, b = _flat(old), _flat(self.config)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                and not any(k.startswith(p) for p in IGNORED_ON_RESUME)]
        if diff:
            self.acc.print(f"resume: config differs from {path} in {', '.join(diff[:6])}"
                           + (" ..." if len(diff) > 6 else ""))
