"""The job's config: the training sections and `Config`, composed of every package's section.

Each component owns its section (`models.config`, `pipelines.config`, and every registered hook's, e.g.
`dassdp.config`); this module adds the training sections, composes them into `Config`, loads a job's YAML
(sectioned or the upstream flat format, `launch.flat_config`) with the strict loader
(`launch.config_loader`) and fills the derived values in one place. Every check lives next to the section
it checks (a `check()` method raising ValueError); `derive` turns the first failure into a ConfigError
naming the file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from launch import config_loader as loader
from launch.config_loader import to_dict, to_yaml  # noqa: F401 - part of this module's interface
from launch.errors import ConfigError
from launch.flat_config import is_flat_format, map_flat, official_run
from launch.hooks import registered
from launch.preempt import parse_duration
from models.config import ModelConfig
from pipelines.config import DataConfig
from pipelines.recipe import CLASSES, fill_defaults


def _duration(value) -> float:
    """Seconds of a duration value, 0 when it cannot be read (the check reports it)."""
    try:
        return parse_duration(value)
    except ValueError:
        return 0.0


def _require(checks) -> None:
    """Raise ValueError("key=value must be what") for the first failed (ok, key, value, what)."""
    for ok, key, value, what in checks:
        if not ok:
            raise ValueError(f"{key}={value!r} must be {what}")


@dataclass
class OptimConfig:
    """Optimizer (timm create_optimizer_v2; no weight decay on 1-D params and PLIF w)."""

    name: str = "adamw"
    lr: float = 1e-3  # per-process batch lr, as in the recipe
    weight_decay: float = 0.01
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None  # max grad norm; None disables clipping

    def check(self) -> None:
        """Reject values the optimizer cannot use."""
        _require([(self.lr > 0, "optim.lr", self.lr, "positive"),
                  (self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "0 or more")])


@dataclass
class SchedConfig:
    """Cosine schedule with linear warm-up, exactly as the recipe (timm cosine)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 3
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    per_step: bool = False  # recipe: per epoch

    def check(self) -> None:
        """Reject a negative warm-up."""
        _require([(self.warmup_epochs >= 0, "sched.warmup_epochs", self.warmup_epochs, "0 or more")])


@dataclass
class TrainConfig:
    """The loop: length, precision, checkpoints, evaluation."""

    epochs: int = 320
    output_dir: str = "./runs/temp"
    seed: int = 12450
    amp: bool = True  # false: fp32 whatever amp_dtype says
    amp_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: fits the device (launch/precision)
    eval_amp: bool = False  # autocast evaluation too; false: fp32, as the official code
    grad_accum: int = 1
    sync_bn: bool = False
    max_steps_per_epoch: int | None = None  # cap (short runs, smoke tests)
    eval_every: int = 1  # epochs
    save_every_steps: int | None = None  # extra `last` checkpoints mid-epoch
    save_latest: bool = False  # upstream key, ignored (a warning when true): `last` is always kept
    test_only: bool = False
    resume: str | None = None  # PATH or "auto"
    transfer: str | None = None  # checkpoint to fine-tune from (classifier dropped)
    tet: bool = False
    tet_phi: float = 1.0
    tet_lambda: float = 0.0
    nonfinite: Literal["stop", "skip"] = "stop"  # what a NaN/inf loss does
    deterministic: bool = False  # cudnn deterministic (slow; the original forced it)
    keep_best: bool = True  # write `best` when validation top-1 improves
    export_safetensors: bool = True  # weights of `last`/`best` also as .safetensors
    stop_after_steps: int | None = None  # debug: leave after this many optimizer steps (resume tests)
    save_rank_weights: bool = False  # debug: every rank writes its final weights (consistency checks)
    eval_batches: int | None = None  # cap on validation batches per evaluation (short runs)
    cpu_malloc_reuse: bool = True  # CPU runs: freed memory stays in the heap for reuse (no page faults)
    time_limit: str | float | None = None  # "3:55:00" or seconds: save and exit 75 before it (launch.preempt)

    def check(self) -> None:
        """Reject loop lengths below one."""
        _require([(self.epochs >= 1, "train.epochs", self.epochs, "at least 1"),
                  (self.grad_accum >= 1, "train.grad_accum", self.grad_accum, "at least 1"),
                  (self.time_limit is None or _duration(self.time_limit) > 0, "train.time_limit",
                   self.time_limit, "a positive duration like '3:55:00', '1-00:00:00' or seconds"),
                  (self.eval_every >= 1, "train.eval_every", self.eval_every, "at least 1")])


@dataclass
class LogConfig:
    """Progress bar, TensorBoard, CSV/JSONL."""

    every_steps: int = 10  # steps between step records (and the only host syncs of the loss)
    tensorboard: bool = True
    progress: bool = True
    rank_consistency: bool = True  # compare a weight checksum across ranks at the end of training

    def check(self) -> None:
        """Reject a log interval below one step."""
        _require([(self.every_steps >= 1, "log.every_steps", self.every_steps, "at least 1")])


CORE_HEAD = (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig), ("sched", SchedConfig),
             ("train", TrainConfig))
CORE_TAIL = (("log", LogConfig),)  # registered hook sections go between train and log


def _compose(hooks: tuple) -> type:
    """The `Config` dataclass: the core sections and one section per registered hook."""
    sections = [*CORE_HEAD, *((spec.name, spec.config) for spec in hooks), *CORE_TAIL]
    names = [n for n, _ in sections]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"hook section(s) {clash} clash with another section; register the hook under "
                          "another name")
    cls = dataclasses.make_dataclass("Config", [(n, t, field(default_factory=t)) for n, t in sections])
    cls.__module__, cls.__doc__ = __name__, "The whole job."
    return cls


_COMPOSED: dict[tuple, type] = {}


def config_class() -> type:
    """`Config` for the hooks registered now (a new class only when the registry changed)."""
    hooks = tuple(registered().values())
    if hooks not in _COMPOSED:
        _COMPOSED[hooks] = _compose(hooks)
    return _COMPOSED[hooks]


Config = config_class()  # with the built-in hooks (DA-SSDP)


def all_keys() -> list[str]:
    """Every dotted key of the schema, sections first."""
    return loader.all_keys(config_class())


def load_config(path: str | Path | None = None, overrides: list[str] = (), *, notice=print) -> Config:
    """Read YAML (sectioned or upstream flat), apply dotted overrides, check strictly, derive values."""
    cls = config_class()
    data: dict = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        data = loader.read_yaml(path)
        if is_flat_format(data, {f.name for f in dataclasses.fields(cls)}):
            flat, data = data, map_flat(data)
            made = official_run(flat, data)
            notice(f"{path}: upstream flat config ({len(flat)} keys) mapped onto the sections, as the "
                   f"official run: {'; '.join(made)}; for the baseline add dassdp.enabled=false")
    cfg = loader.build(cls, data, where)  # check the file on its own first: errors name the file
    for text in overrides:
        key, value = loader.parse_override(text)
        if key not in loader.all_keys(cls):
            raise loader.unknown_key(key, "command line", cls)
        patch: dict = {}
        loader.set_dotted(patch, key, value)
        data = loader.merge(data, patch)
        cfg = loader.build(cls, data, "command line")
    cfg = derive(cfg, where)
    if cfg.train.save_latest:
        notice(f"{where}: train.save_latest is ignored: checkpoints/last.pt is always kept")
    return cfg


def _check_model_data(m: ModelConfig, d: DataConfig) -> None:
    _require([(m.T >= 1, "model.T", m.T, "at least 1"),
              (m.img_size >= 8, "model.img_size", m.img_size, "at least 8 pixels"),
              (m.num_classes is None or m.num_classes >= 1, "model.num_classes", m.num_classes, "at least 1"),
              (d.batch_size >= 1, "data.batch_size", d.batch_size, "at least 1"),
              (0.0 <= d.label_smoothing < 1.0, "data.label_smoothing", d.label_smoothing, "in [0, 1)")])


def derive(cfg: Config, where: str = "<config>") -> Config:
    """Fill derived values in one place and reject absurd ones (each section's `check`)."""
    m, d = cfg.model, cfg.data
    if len(d.input_size) != 3:
        raise ConfigError(f"{where}: data.input_size={d.input_size} must be [C, H, W]")
    fill_defaults(d)  # the dataset-dependent data choices (crop, flip, eval crop, classes), shown resolved
    if m.img_size is None:
        m.img_size = d.input_size[-1]
    if m.in_channels is None:
        m.in_channels = d.input_size[0]
    if m.num_classes is None:
        m.num_classes = d.num_classes or CLASSES.get(d.dataset)
    try:
        _check_model_data(m, d)
        for f in dataclasses.fields(cfg):
            check = getattr(getattr(cfg, f.name), "check", None)
            if callable(check):
                check()
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    for key, value in loader.numbers(cfg):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: {key}={value!r} must be a finite number")
    return cfg


def from_dict(data: dict, where: str = "<dict>") -> Config:
    """Strictly rebuild a Config from `to_dict` output (e.g. from a checkpoint)."""
    return derive(loader.build(config_class(), data, where), where)
