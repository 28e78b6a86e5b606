"""The strict loader: YAML and dotted overrides -> nested typed dataclasses, for any schema.

Every value is checked against its field's annotation (bool, int, float, str, Literal, optional, list,
tuple, nested dataclass); an unknown key is an error naming the file and the closest valid key. Nothing
here knows the sections of a job: `launch.config` composes them and calls `build`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from launch.errors import ConfigError

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- type checking
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str, root: type) -> Any:
    """Return `value` checked (and losslessly converted) against the annotation `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key, where, root)
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
        return build(tp, value, where, prefix=key + ".", root=root)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}={value!r} must be a list, expected {_type_name(tp)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key}={value!r} must have {len(args)} items")
            return tuple(_coerce(v, a, f"{key}[{i}]", where, root)
                         for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]", where, root) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    return _coerce_scalar(value, tp, key, where)


def _coerce_scalar(value: Any, tp: Any, key: str, where: str) -> Any:
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


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of a dataclass."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections first."""
    keys = []
    for name, tp in field_types(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, prefix + name + "."))
    return keys


def unknown_key(key: str, where: str, root: type) -> ConfigError:
    """The error for a key the schema `root` does not have, with the closest valid key."""
    candidates = all_keys(root)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # try the leaf name against every leaf
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in candidates}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[near[0]]] if near else []
    hint = f"; did you mean {close[0]}?" if close else "; see `dassdp-train --print-config` for valid keys"
    return ConfigError(f"{where}: unknown key {key}{hint}")


def build(cls: type, data: dict, where: str, prefix: str = "", root: type | None = None) -> Any:
    """Strictly build dataclass `cls` from a dict (unknown keys and wrong types are ConfigErrors)."""
    types_, root = field_types(cls), root or cls
    kwargs = {}
    for k, v in data.items():
        if not isinstance(k, str) or k not in types_:
            raise unknown_key(prefix + str(k), where, root)
        kwargs[k] = _coerce(v, types_[k], prefix + k, where, root)
    return cls(**kwargs)


def numbers(obj: Any, prefix: str = ""):
    """(dotted key, value) of every float in a dataclass tree, list items included."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from numbers(v, prefix + f.name + ".")
        elif isinstance(v, float):
            yield prefix + f.name, v
        elif isinstance(v, (list, tuple)):
            yield from ((f"{prefix}{f.name}[{i}]", x) for i, x in enumerate(v) if isinstance(x, float))


# ----------------------------------------------------------------------------- YAML and overrides
def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file (empty file: {})."""
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


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    """d["a"]["b"] = value for dotted "a.b", creating sections."""
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


def merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, section by section."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- writing
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


def to_yaml(cfg: Any) -> str:
    """A config as YAML; loading it back gives the same config."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
