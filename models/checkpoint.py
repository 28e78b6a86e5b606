"""Load weights into a SpikingResformer: official files, this project's checkpoints, safetensors.

Accepted: a path to a `.safetensors` file; a path to a torch file holding `{"model": state_dict, ...}`
(the official release and this project's trainer) or a bare state dict; or such an object in memory.
Prefixes `module.` (DDP) and `_orig_mod.` (torch.compile) are stripped. Entries `ssdp.*` / `ssdp_dssa.*`
written by the DA-SSDP authors' code are rule hyperparameters, not weights: they are set aside and
reported. Without `transfer` the load is strict; with it the classifier is dropped from the source.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

SET_ASIDE_PREFIXES = ("ssdp.", "ssdp_dssa.")
STRIP_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (names, shapes or file format)."""


@dataclass
class LoadReport:
    """What `load_weights` did: counts and the names that were dropped, set aside, missing or unexpected."""

    source: str
    kind: str  # "safetensors" | "checkpoint" (dict with "model") | "state_dict"
    loaded: int = 0
    dropped: list[str] = field(default_factory=list)  # transfer: classifier entries not loaded
    set_aside: list[str] = field(default_factory=list)  # DA-SSDP extras (ssdp.*, ssdp_dssa.*)
    missing: list[str] = field(default_factory=list)  # model entries left at their initial values
    unexpected: list[str] = field(default_factory=list)  # file entries the model has no place for

    def summary(self) -> str:
        """One line: source, counts and the names that were not a plain match."""
        parts = [f"loaded {self.loaded} tensors from {self.source} ({self.kind})"]
        for label, names in (("dropped", self.dropped), ("set aside", self.set_aside),
                             ("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:6]) + (f", ... (+{len(names) - 6})" if len(names) > 6 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)


def load_error_reason(e: Exception) -> str:
    """torch.load's or safetensors' (often multi-line) error as one short clause: the line that says why."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
    why = next((x for x in lines if "global" in x.lower() and "unsupported" in x.lower()), lines[0])
    return why[:200]


def _read(path_or_state) -> tuple[Mapping[str, torch.Tensor], str, str]:
    """Return (state dict, source label, kind)."""
    if isinstance(path_or_state, Mapping):
        obj, source = path_or_state, "<in-memory state>"
    else:
        path = Path(os.fspath(path_or_state))
        source = str(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist: pass an existing .pth/.pt/.safetensors")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                return load_file(str(path), device="cpu"), source, "safetensors"
            except Exception as e:  # noqa: BLE001 - reported as one clear error
                raise CheckpointError(f"cannot read {path} as safetensors ({load_error_reason(e)}); "
                                      "the file is truncated or not a .safetensors file: export it "
                                      "again") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - reported as one clear error
            raise CheckpointError(f"cannot read {path} as a plain-tensor torch checkpoint "
                                  f"({load_error_reason(e)}); nothing in it was run; if you trust its "
                                  "source, re-save it as {'model': state_dict} of plain tensors or as "
                                  ".safetensors") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict or {{'model': ...}}")
    if isinstance(obj.get("model"), Mapping):
        return obj["model"], source, "checkpoint"
    if isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"], source, "checkpoint"
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, source, "state_dict"
    raise CheckpointError(f"{source} has no 'model' entry and is not a bare state dict "
                          f"(top-level keys: {sorted(obj)[:8]})")


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in STRIP_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def load_weights(model: nn.Module, path_or_state, *, transfer: bool = False) -> LoadReport:
    """Load a checkpoint into `model` (strict unless `transfer`, which drops the classifier)."""
    raw, source, kind = _read(path_or_state)
    report = LoadReport(source=source, kind=kind)
    target = getattr(model, "_orig_mod", model)
    own = target.state_dict()
    sd: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        key = _strip(name)
        if key.startswith(SET_ASIDE_PREFIXES):
            report.set_aside.append(key)
        elif transfer and key.startswith("classifier."):
            report.dropped.append(key)
        else:
            sd[key] = value
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {len(bad)} entr{'y' if len(bad) == 1 else 'ies'}"
                              f" — {'; '.join(bad[:4])}; build the model with the checkpoint's variant, "
                              "img_size and num_classes (or use transfer=True for another class count)")
    report.missing = sorted(k for k in own if k not in sd)
    report.unexpected = sorted(k for k in sd if k not in own)
    if not transfer and (report.missing or report.unexpected):
        raise CheckpointError(f"{source} does not match the model: missing {report.missing[:6]}, "
                              f"unexpected {report.unexpected[:6]}; check the variant name, or load with "
                              "transfer=True to drop the classifier")
    target.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    report.loaded = sum(1 for k in sd if k in own)
    return report
