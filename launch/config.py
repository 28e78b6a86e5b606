"""One config schema: YAML -> nested typed dataclasses, loaded strictly.

Each component owns its section (`models.config`, `pipelines.config`, `dassdp.config`); this module
adds the training sections, composes them into `Config`, and implements the strict loader, dotted
overrides and the mapping of the seed's flat 22-key files.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dassdp.config import DASSDPConfig
from models.config import ModelConfig
from pipelines.config import DataConfig


class ConfigError(ValueError):
    """A config problem, described in one line that names the file and key."""


@dataclass
class OptimConfig:
    """Optimizer (timm create_optimizer_v2; no weight decay on 1-D params and PLIF w)."""

    name: str = "adamw"
    lr: float = 1e-3  # per-process batch lr, as in the recipe
    weight_decay: float = 0.01
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None  # max grad norm; None disables clipping


@dataclass
class SchedConfig:
    """Cosine schedule with linear warm-up, exactly as the recipe (timm cosine)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 3
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    per_step: bool = False  # recipe: per epoch


@dataclass
class TrainConfig:
    """The loop: length, precision, checkpoints, evaluation."""

    epochs: int = 320
    output_dir: str = "./runs/temp"
    seed: int = 12450
    amp: bool = True
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    grad_accum: int = 1
    sync_bn: bool = False
    max_steps_per_epoch: int | None = None  # cap (short runs, smoke tests)
    eval_every: int = 1  # epochs
    save_every_steps: int | None = None  # extra `last` checkpoints mid-epoch
    save_latest: bool = False  # seed key: keep `last` (we always do; kept for compatibility)
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


@dataclass
class LogConfig:
    """Progress bar, TensorBoard, CSV/JSONL."""

    every_steps: int = 10  # steps between step records (and the only host syncs of the loss)
    tensorboard: bool = True
    progress: bool = True
    rank_consistency: bool = True  # compare a weight checksum across ranks at the end of training


@dataclass
class Config:
    """The whole job."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dassdp: DASSDPConfig = field(default_factory=DASSDPConfig)
    log: LogConfig = field(default_factory=LogConfig)


NUM_CLASSES = {"imagenet": 1000, "cifar10": 10, "cifar100": 100, "cifar10dvs": 10,
               "dvs128gesture": 11, "fashion_mnist": 10}

# The seed's flat files (SpikingResformer / DA-SSDP configs): key -> dotted path in Config.
SEED_KEYS = {
    "seed": "train.seed", "epochs": "train.epochs", "batch_size": "data.batch_size", "T": "model.T",
    "model": "model.name", "dataset": "data.dataset", "augment": "data.augment", "mixup": "data.mixup",
    "cutout": "data.cutout", "label_smoothing": "data.label_smoothing", "workers": "data.workers",
    "lr": "optim.lr", "optimizer": "optim.name", "weight_decay": "optim.weight_decay",
    "input_size": "data.input_size", "TET": "train.tet", "TET_phi": "train.tet_phi",
    "TET_lambda": "train.tet_lambda", "save_latest": "train.save_latest", "test_only": "train.test_only",
    "amp": "train.amp", "sync_bn": "train.sync_bn",
}
SEED_DATASETS = {"imagenet": "imagenet", "imagenet100": "imagenet", "cifar10": "cifar10",
                 "cifar100": "cifar100", "cifar10dvs": "cifar10dvs", "dvs128gesture": "dvs128gesture"}

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- type checking
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Return `value` checked (and losslessly converted) against the annotation `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: {key}={value!r} is not one of {list(args)}{hint}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping (section), got {value!r}")
        return _build(tp, value, where, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}={value!r} must be a list, expected {_type_name(tp)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key}={value!r} must have {len(args)} items")
            return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key}={value!r} must be true or false (bool)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key}={value!r} must be an integer (int)")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # PyYAML reads 5e-4 as a string
        raise ConfigError(f"{where}: {key}={value!r} must be a number (float)")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key}={value!r} must be a string (str)")
    raise ConfigError(f"{where}: {key} has an unsupported type {_type_name(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections first."""
    keys = []
    for name, tp in _field_types(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, prefix + name + "."))
    return keys


def _unknown(key: str, where: str) -> ConfigError:
    candidates = all_keys()
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # try the leaf name against every leaf
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in candidates}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[near[0]]] if near else []
    hint = f"; did you mean {close[0]}?" if close else "; see `dassdp-train --print-config` for valid keys"
    return ConfigError(f"{where}: unknown key {key}{hint}")


def _build(cls: type, data: dict, where: str, prefix: str = "") -> Any:
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in data.items():
        if not isinstance(k, str) or k not in types_:
            raise _unknown(prefix + str(k), where)
        kwargs[k] = _coerce(v, types_[k], prefix + k, where)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{loc}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def is_seed_format(data: dict) -> bool:
    """True for the seed's flat files: only seed keys and no schema section (`model:` is a name there)."""
    sections = {f.name for f in dataclasses.fields(Config)}
    return bool(data) and set(data) <= set(SEED_KEYS) and not any(
        isinstance(data[k], dict) for k in set(data) & sections)


def map_seed(data: dict, where: str) -> dict:
    """Map a seed flat config onto the nested schema (dict form)."""
    nested: dict = {}
    for k, v in data.items():
        if k == "dataset" and isinstance(v, str):
            v = SEED_DATASETS.get(v.lower(), v)
        if k == "augment" and v in ("", False):
            v = None
        _set_dotted(nested, SEED_KEYS[k], v)
    return nested


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    d[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=1e-3` -> ("optim.lr", 0.001); values are YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = (), *, notice=print) -> Config:
    """Read YAML (schema or seed format), apply dotted overrides, check strictly, derive values."""
    data: dict = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        data = _read_yaml(path)
        if is_seed_format(data):
            notice(f"{path}: seed flat config ({len(data)} keys) mapped onto the sections "
                   "model/data/optim/train")
            data = map_seed(data, where)
    cfg = _build(Config, data, where)  # check the file on its own first: errors name the file
    for text in overrides:
        key, value = parse_override(text)
        if key not in all_keys():
            raise _unknown(key, "command line")
        patch: dict = {}
        _set_dotted(patch, key, value)
        data = _merge(data, patch)
        cfg = _build(Config, data, "command line")
    return derive(cfg, where)


def derive(cfg: Config, where: str = "<config>") -> Config:
    """Fill derived values in one place and reject absurd ones."""
    m, d = cfg.model, cfg.data
    if len(d.input_size) != 3:
        raise ConfigError(f"{where}: data.input_size={d.input_size} must be [C, H, W]")
    if m.img_size is None:
        m.img_size = d.input_size[-1]
    if m.in_channels is None:
        m.in_channels = d.input_size[0]
    if m.num_classes is None:
        m.num_classes = d.num_classes or NUM_CLASSES.get(d.dataset)
    checks = [
        (m.T >= 1, "model.T", m.T, "at least 1"),
        (m.img_size >= 8, "model.img_size", m.img_size, "at least 8 pixels"),
        (m.num_classes is None or m.num_classes >= 1, "model.num_classes", m.num_classes, "at least 1"),
        (d.batch_size >= 1, "data.batch_size", d.batch_size, "at least 1"),
        (d.workers >= 0, "data.workers", d.workers, "0 or more"),
        (0.0 <= d.label_smoothing < 1.0, "data.label_smoothing", d.label_smoothing, "in [0, 1)"),
        (cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "positive"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, "0 or more"),
        (cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "at least 1"),
        (cfg.train.grad_accum >= 1, "train.grad_accum", cfg.train.grad_accum, "at least 1"),
        (cfg.train.eval_every >= 1, "train.eval_every", cfg.train.eval_every, "at least 1"),
        (cfg.sched.warmup_epochs >= 0, "sched.warmup_epochs", cfg.sched.warmup_epochs, "0 or more"),
        (cfg.dassdp.warmup_epochs >= 0, "dassdp.warmup_epochs", cfg.dassdp.warmup_epochs, "0 or more"),
        (cfg.dassdp.sigma > 0, "dassdp.sigma", cfg.dassdp.sigma, "positive"),
        (cfg.dassdp.dw_clip > 0, "dassdp.dw_clip", cfg.dassdp.dw_clip, "positive"),
        (cfg.dassdp.a_plus >= 0, "dassdp.a_plus", cfg.dassdp.a_plus, "0 or more"),
        (cfg.dassdp.a_minus is None or cfg.dassdp.a_minus >= 0, "dassdp.a_minus", cfg.dassdp.a_minus,
         "0 or more"),
        (cfg.dassdp.gate_clip[0] <= cfg.dassdp.gate_clip[1], "dassdp.gate_clip", cfg.dassdp.gate_clip,
         "[low, high] with low <= high"),
        (cfg.dassdp.warmup_steps is None or cfg.dassdp.warmup_steps >= 0, "dassdp.warmup_steps",
         cfg.dassdp.warmup_steps, "0 or more"),
        (cfg.log.every_steps >= 1, "log.every_steps", cfg.log.every_steps, "at least 1"),
    ]
    for ok, key, value, what in checks:
        if not ok:
            raise ConfigError(f"{where}: {key}={value!r} must be {what}")
    for key, value in _numbers(cfg):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: {key}={value!r} must be a finite number")
    return cfg


def _numbers(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _numbers(v, prefix + f.name + ".")
        elif isinstance(v, float):
            yield prefix + f.name, v
        elif isinstance(v, (list, tuple)):
            yield from ((f"{prefix}{f.name}[{i}]", x) for i, x in enumerate(v) if isinstance(x, float))


def to_dict(cfg: Any) -> dict:
    """Plain dict (lists for tuples) for YAML/JSON."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, leaf lists inline ([3, 224, 224])."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML; loading it back gives the same Config."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def from_dict(data: dict, where: str = "<dict>") -> Config:
    """Strictly rebuild a Config from `to_dict` output (e.g. from a checkpoint)."""
    return derive(_build(Config, data, where), where)
