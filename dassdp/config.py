"""DASSDPConfig: the `dassdp:` block (owned by `dassdp/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The two documented settings (docs/dassdp.md, "Presets"); a preset only fills the keys left unset (null).
PRESETS: dict[str, dict[str, object]] = {
    "code": {"latency": "last", "a_minus": 5e-4, "block_silent": "zero"},  # the authors' public code
    "paper": {"latency": "first", "a_minus": 1e-4, "block_silent": "T"},  # the paper's text
}

SITES = ("classifier", "first_last_stage_dssa")  # the authors' two sites (SpikingResformer aliases)


@dataclass
class DASSDPConfig:
    """DA-SSDP hyperparameters; defaults reproduce the authors' code (see docs/dassdp.md, presets)."""

    enabled: bool = False  # attach the rule (the trainer builds the hook only when true; training only)
    preset: Literal["code", "paper"] = "code"  # fills latency/a_minus when they are null: code or paper
    warmup_epochs: int = 100  # epochs that only record gate statistics
    warmup_steps: int | None = None  # overrides warmup_epochs when set (short runs)
    a_plus: float = 1.5e-3  # potentiation amplitude A+ (co-firing pairs)
    a_minus: float | None = None  # null = from preset (code 5e-4, paper 1e-4); "A_baseline" in the code
    sigma: float = 1.0  # width of the Gaussian latency window, in time steps
    gate_clip: tuple[float, float] = (0.0, 2.0)  # [low, high] clip of the per-sample dopamine gate
    dw_clip: float = 1.0  # clip of dW per entry (never active in practice: abs(dW) <= 2 max(A))
    latency: Literal["last", "first"] | None = None  # null = from preset (code: last spike, paper: first)
    # latency of a block site's never-fired channel; null = from preset (code: "zero", what its
    # cumsum().argmax() gives at W_proj; paper: "T"). Linear sites (the classifier) always use T, as the code.
    block_silent: Literal["zero", "T"] | None = None
    sites: list[str] = field(default_factory=lambda: list(SITES))  # site aliases, or raw "path:type:weight"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"dassdp.preset={self.preset!r} must be one of {sorted(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def check(self) -> None:
        """Raise ValueError naming the first `dassdp.<key>` whose value the rule cannot use."""
        lo, hi = self.gate_clip
        checks = [
            (self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "0 or more"),
            (self.sigma > 0, "sigma", self.sigma, "positive"),
            (self.dw_clip > 0, "dw_clip", self.dw_clip, "positive"),
            (self.a_plus >= 0, "a_plus", self.a_plus, "0 or more"),
            (self.a_minus is not None and self.a_minus >= 0, "a_minus", self.a_minus, "0 or more"),
            (lo <= hi, "gate_clip", self.gate_clip, "[low, high] with low <= high"),
            (self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps", self.warmup_steps,
             "0 or more"),
            (self.latency in ("last", "first"), "latency", self.latency, "'last' or 'first'"),
            (self.block_silent in ("zero", "T"), "block_silent", self.block_silent, "'zero' or 'T'"),
            (len(self.sites) > 0, "sites", self.sites, "a non-empty list of site names"),
        ]
        for ok, key, value, what in checks:
            if not ok:
                raise ValueError(f"dassdp.{key}={value!r} must be {what}")
