"""Assembling a job: the accelerator, the process settings and every part the `Trainer` is handed.

`build_trainer` is the only place that knows how the parts fit together: data converted on first use,
model (initial weights, SyncBN, compile), loaders, loss, hooks from the registry, optimizer and schedule,
`accelerate.prepare`, the checkpointer (which restores `train.resume`), the run folder and the logger.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch

from launch import cpu_malloc, datasets, hooks, parts
from launch.checkpoint import versions
from launch.checkpointer import Checkpointer
from launch.config import Config, TrainConfig, to_dict, to_yaml
from launch.errors import CheckpointLoadError, ConfigError
from launch.metrics import RunLogger, write_run_info
from launch.precision import RunPrecision, resolve_precision, resolve_workers
from launch.progress import TrainProgress
from launch.trainer import Trainer


def run_precision(t: TrainConfig, device: torch.device) -> RunPrecision:
    """The run's precision from `train.amp`, `train.amp_dtype`, `train.eval_amp` on `device` (cached)."""
    return resolve_precision(t.amp, t.amp_dtype, t.eval_amp, str(device))


def build_accelerator(cfg: Config):
    """Accelerator from `train:` (precision, printed once); device and process group from the launcher."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

    # the device, before the Accelerator that needs the precision; cpu= as the Accelerator reads it (else a
    # CPU run under `accelerate launch --multi_gpu` starts as independent single processes)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    prec = run_precision(cfg.train, state.device)  # printed by build_trainer, after the user's files are read
    ddp = DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)
    return Accelerator(mixed_precision=prec.train, step_scheduler_with_optimizer=False, kwargs_handlers=[ddp])


def unwrap(acc, prepared):
    """The plain module inside `prepared`. accelerate's prepare also wraps the model's forward in autocast;
    that wrapper is removed, so autocast is on exactly where the trainer asks for it (training steps, and
    evaluation only with train.eval_amp)."""
    acc.unwrap_model(prepared, keep_fp32_wrapper=False)  # the wrapper sits on the compiled module, if any
    return acc.unwrap_model(prepared, keep_fp32_wrapper=False, keep_torch_compile=False)


def prepare_process(t: TrainConfig, device: torch.device) -> None:
    """Seed (the same on every rank: identical init), allocator and cudnn settings of this process."""
    from accelerate.utils import set_seed

    set_seed(t.seed)
    cpu_malloc.tune_for(device.type, t.cpu_malloc_reuse)  # no page-fault churn per step (see its doc)
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic


def initial_weights(model: torch.nn.Module, t: TrainConfig, say) -> None:
    """`--transfer` (training) or the checkpoint of `--test-only --resume` into the bare model."""
    import models

    if t.transfer and not t.test_only:  # model.pretrained was loaded by models.build_model
        say("transfer: " + models.load_weights(model, t.transfer, transfer=True).summary())
    if t.test_only and t.resume:
        path = _test_checkpoint(t.resume, Path(t.output_dir) / "checkpoints")
        say(f"test-only: {path}: " + models.load_weights(model, str(path)).summary())


def _test_checkpoint(resume: str, ckpt_dir: Path) -> Path:
    if resume != "auto":
        return Path(resume)
    for name in ("best.pt", "last.pt"):
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    raise CheckpointLoadError(f"--test-only --resume auto: no best.pt or last.pt in {ckpt_dir}")


def micro_batches(train_loader, t: TrainConfig, data_path: str) -> int:
    """Micro-batches per epoch: the loader's length, capped by train.max_steps_per_epoch."""
    n_micro = len(train_loader)
    if t.max_steps_per_epoch:
        n_micro = min(n_micro, t.max_steps_per_epoch * t.grad_accum)
    if n_micro < 1:
        raise ConfigError(f"data.path={data_path}: the training loader yields no batch per process; "
                          "lower data.batch_size or check the dataset")
    return n_micro


def resolve_loader_workers(cfg: Config, acc) -> str:
    """`data.workers: auto` -> this process's share of the node's cores (kept in the run's config.yaml);
    returns the line that says so, with the data recipe."""
    from pipelines.recipe import describe

    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))  # set by torchrun / accelerate launch
    cfg.data.workers, why = resolve_workers(cfg.data.workers, processes_per_node=local)
    return f"{describe(cfg.data)}; {why}"


def build_trainer(cfg: Config, acc, stop=None) -> Trainer:
    """Every part of the job from its config section, prepared by `acc`, the resume state loaded."""
    t = cfg.train
    prepare_process(t, acc.device)
    model = parts.build_model(cfg.model, acc.device)  # a GPU run never compiles (or asks for) the CPU kernels
    initial_weights(model, t, acc.print)  # the user's files first: a refusal is then the only line printed
    data_line = resolve_loader_workers(cfg, acc)
    if acc.is_main_process:
        for line in (run_precision(t, acc.device).line(), data_line):
            print(f"dassdp-train: {line}", file=sys.stderr)
    with acc.main_process_first():
        datasets.ensure_data(cfg.data, main=acc.is_main_process)
    if t.sync_bn and acc.num_processes > 1:  # needs CUDA (SyncBatchNorm has no CPU kernel)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_loader, val_loader = parts.build_loaders(cfg.data, acc, seed=t.seed, T=cfg.model.T,
                                                   need_train=not t.test_only)
    if t.test_only:
        prepared = acc.prepare(model.to(acc.device))
        return Trainer(cfg, acc, model=prepared, raw=unwrap(acc, prepared), val_loader=val_loader)
    n_micro = micro_batches(train_loader, t, cfg.data.path)
    steps_per_epoch = math.ceil(n_micro / t.grad_accum)
    optimizer = parts.build_optimizer(model, cfg.optim)
    sched = parts.build_scheduler(optimizer, cfg.sched, epochs=t.epochs, steps_per_epoch=steps_per_epoch)
    if cfg.model.compile:  # hooks attach to the plain module inside (unwrap_model below)
        import models

        model = models.compile_model(model.to(acc.device))
    prepared, optimizer, _ = acc.prepare(model, optimizer, sched)
    # timm schedulers take absolute epoch/update indices: the trainer steps the bare one, not the
    # AcceleratedScheduler (which repeats steps per process and drops them after skipped optimizer steps).
    raw = unwrap(acc, prepared)
    training_hooks = hooks.build_hooks(cfg)
    for hook in training_hooks.values():
        hook.setup(raw, steps_per_epoch=steps_per_epoch)
    progress = TrainProgress()
    out = Path(t.output_dir)
    ckpt = Checkpointer(out / "checkpoints", acc, model=raw, optimizer=optimizer, scheduler=sched,
                        hooks=training_hooks, config=to_dict(cfg), export=t.export_safetensors)
    resumed = ckpt.restore(t.resume, progress)
    if acc.is_main_process:
        write_run_info(out, to_yaml(cfg), versions(), {"world_size": acc.num_processes,
                                                       "resumed_from_step": progress.step,
                                                       "precision": run_precision(t, acc.device).record()})
    log = RunLogger(out, enabled=acc.is_main_process, tensorboard=cfg.log.tensorboard, step=progress.step,
                    epoch=progress.epoch, resumed=resumed)
    return Trainer(cfg, acc, model=prepared, raw=raw, val_loader=val_loader, train_loader=train_loader,
                   criterion=parts.build_criterion(t, cfg.data.label_smoothing), optimizer=optimizer,
                   sched=sched, hooks=training_hooks, progress=progress, ckpt=ckpt, log=log, n_micro=n_micro,
                   stop=stop)
