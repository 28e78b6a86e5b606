"""DASSDPConfig: the `dassdp:` block (owned by `dassdp/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The two documented settings (docs/dassdp.md, "Presets"); a preset only fills the keys left unset (null).
PRESETS: dict[str, dict[str, object]] = {
    "code": {"latency": "last", "a_minus": 5e-4},  # the authors' public code (the paper's numbers)
    "paper": {"latency": "first", "a_minus": 1e-4},  # the paper's text
}

SITES = ("classifier", "first_last_stage_dssa")  # the authors' two sites (SpikingResformer aliases)


@dataclass
class DASSDPConfig:
    """DA-SSDP hyperparameters; defaults reproduce the authors' code (see docs/dassdp.md, presets)."""

    enabled: bool = False  # attach the rule (a post-optimizer-step hook; training only)
    preset: Literal["code", "paper"] = "code"  # fills latency/a_minus when they are null: code or paper
    warmup_epochs: int = 100  # epochs that only record gate statistics
    warmup_steps: int | None = None  # overrides warmup_epochs when set (short runs)
    a_plus: float = 1.5e-3  # potentiation amplitude A+ (co-firing pairs)
    a_minus: float | None = None  # null = from preset (code 5e-4, paper 1e-4); "A_baseline" in the code
    sigma: float = 1.0  # width of the Gaussian latency window, in time steps
    gate_clip: tuple[float, float] = (0.0, 2.0)  # [low, high] clip of the per-sample dopamine gate
    dw_clip: float = 1.0  # clip of dW per entry (never active in practice: abs(dW) <= 2 max(A))
    latency: Literal["last", "first"] | None = None  # null = from preset (code: last spike, paper: first)
    sites: list[str] = field(default_factory=lambda: list(SITES))  # site aliases, or raw "path:type:weight"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"dassdp.preset={self.preset!r} must be one of {sorted(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
