"""Sites (which weight the rule updates) and the observers that record their pre/post spikes.

A site is named either by an alias from `model.dassdp_sites()` (alias -> (module path, site type, weight
attribute path)) or by a raw string "module.path:type:weight_attr", so the rule serves any spiking model.
Site types say how pre/post are observed (docs/dassdp.md):
- "linear": the module maps [T,B,C_in] -> [T,B,C_out]; fired = (T-mean > 0), latency from (x_t > 0).
- "block":  the module maps [T,B,C,H,W] -> [T,B,C,H,W]; a channel spikes at step t when any spatial
            position is > 0; fired = spiked in any step; the weight is viewed as [C, C]; a never-fired
            channel's latency is `dassdp.block_silent` (code preset: 0, as the authors' code; paper: T).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dassdp.functional import latency

SITE_TYPES = ("linear", "block")


class SiteError(ValueError):
    """A site name, path or shape that does not fit the model."""


@dataclass(frozen=True)
class SiteSpec:
    """One site: config name, module dotted path, type, weight attribute path inside the module."""

    name: str
    path: str
    kind: str
    weight_attr: str


def _model_sites(model: nn.Module) -> dict[str, tuple[str, str, str]]:
    fn = getattr(model, "dassdp_sites", None)
    return dict(fn()) if callable(fn) else {}


def resolve_sites(model: nn.Module, names: list[str]) -> list[SiteSpec]:
    """Turn config site names (aliases or raw "path:type:weight") into SiteSpecs; unknown -> SiteError."""
    known = _model_sites(model)
    specs = []
    for name in names:
        if name in known:
            path, kind, attr = known[name]
        elif name.count(":") == 2:
            path, kind, attr = name.split(":")
        else:
            valid = ", ".join(sorted(known)) or f"none ({type(model).__name__} has no dassdp_sites())"
            raise SiteError(f"dassdp.sites: unknown site {name!r}; valid names: {valid}; or give a raw site "
                            "as 'module.path:linear|block:weight_attr'")
        if kind not in SITE_TYPES:
            raise SiteError(f"dassdp.sites: site {name!r} has type {kind!r}; it must be one of {SITE_TYPES}")
        specs.append(SiteSpec(name, path, kind, attr))
    if len({s.name for s in specs}) != len(specs):
        raise SiteError(f"dassdp.sites: {names} names a site twice; list each site once")
    return specs


def _get(root: nn.Module, dotted: str, what: str, site: str):
    obj = root
    for part in [p for p in dotted.split(".") if p]:
        if not hasattr(obj, part):
            raise SiteError(f"dassdp site {site!r}: {what} {dotted!r} not found ({part!r} missing on "
                            f"{type(obj).__name__}); fix the site's path")
        obj = getattr(obj, part)
    return obj


class SiteObserver:
    """Forward hooks on one site module: record fired/latency of its input (pre) and output (post).

    Recording happens only in training mode, under no_grad, on detached tensors, into buffers that are
    allocated once and overwritten in place (no host sync, no graph kept alive). Eval forwards are untouched.
    """

    def __init__(self, spec: SiteSpec, model: nn.Module, latency_mode: str, block_silent: str = "T"):
        self.spec = spec
        self.module = _get(model, spec.path, "module", spec.name)
        if not isinstance(self.module, nn.Module):
            raise SiteError(f"dassdp site {spec.name!r}: {spec.path!r} is a {type(self.module).__name__}, "
                            "not a module")
        self.weight = _get(self.module, spec.weight_attr, "weight", spec.name)
        if not isinstance(self.weight, Tensor) or self.weight.dim() < 2:
            raise SiteError(f"dassdp site {spec.name!r}: {spec.path}.{spec.weight_attr} must be a weight "
                            "tensor of 2 or more dims")
        self.latency_mode = latency_mode
        self.silent = 0 if spec.kind == "block" and block_silent == "zero" else None  # None: T
        self.bufs: dict[str, Tensor] = {}  # pre/t_pre [B,C_in], post/t_post [B,C_out]
        self.seen = {"pre": False, "post": False}
        self.T = 0
        self._handles = [self.module.register_forward_pre_hook(self._on_input),
                         self.module.register_forward_hook(self._on_output)]

    # ------------------------------------------------------------------ recording
    def _spikes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(fired [B,C] float, per-step spikes [T,B,C] bool) by the site type's definition."""
        want = 3 if self.spec.kind == "linear" else 5
        if not isinstance(x, Tensor) or x.dim() != want:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            dims = "[T,B,C]" if want == 3 else "[T,B,C,H,W]"
            raise SiteError(f"dassdp site {self.spec.name!r} ({self.spec.kind}): {self.spec.path} saw "
                            f"{shape}; a {self.spec.kind} site needs {dims} tensors")
        x = x.detach()
        if self.spec.kind == "linear":
            seq = x > 0  # [T,B,C]
            fired = x.mean(0, dtype=torch.float32) > 0  # [B,C]
        else:
            seq = x.amax((3, 4)) > 0  # [T,B,C]: any spatial position > 0 (max > 0; 10x faster than any)
            fired = seq.any(0)  # [B,C]
        return fired, seq

    def record(self, side: str, x: Tensor) -> None:
        """Record side "pre" or "post" of the site from its spikes `x`; the forward hooks call this."""
        with torch.no_grad():
            fired, seq = self._spikes(x)
            t = latency(seq, self.latency_mode, self.silent)  # [B,C]
            for key, val in ((side, fired), ("t_" + side, t)):
                buf = self.bufs.get(key)
                if buf is None or buf.shape != val.shape or buf.device != val.device:
                    buf = self.bufs[key] = torch.empty(val.shape, dtype=torch.float32, device=val.device)
                buf.copy_(val)
        self.T = seq.shape[0]
        self.seen[side] = True

    def _on_input(self, module: nn.Module, args) -> None:
        if module.training and args:
            self.record("pre", args[0])

    def _on_output(self, module: nn.Module, args, output) -> None:
        if module.training:
            self.record("post", output)

    # ------------------------------------------------------------------ use
    @property
    def ready(self) -> bool:
        """Both sides recorded since the last `consume`."""
        return self.seen["pre"] and self.seen["post"]

    def consume(self) -> None:
        """Mark the recorded statistics as used."""
        self.seen = {"pre": False, "post": False}

    def check_shapes(self) -> tuple[int, int]:
        """(C_out, C_in) of the recorded batch, checked against the weight."""
        C_in, C_out = self.bufs["pre"].shape[1], self.bufs["post"].shape[1]
        if self.weight.shape[0] != C_out or self.weight.numel() != C_out * C_in:
            where = f"{self.spec.path}.{self.spec.weight_attr}"
            raise SiteError(f"dassdp site {self.spec.name!r}: weight {where} "
                            f"has shape {tuple(self.weight.shape)}, but the site saw C_in={C_in}, "
                            f"C_out={C_out}; point the site at the weight that maps input to output")
        return C_out, C_in

    def remove(self) -> None:
        """Detach the forward hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
