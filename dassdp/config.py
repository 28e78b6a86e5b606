"""DASSDPConfig: the `dassdp:` block (owned by `dassdp/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DASSDPConfig:
    """DA-SSDP hyperparameters; defaults reproduce the authors' code (see README, presets)."""

    enabled: bool = False
    warmup_epochs: int = 100  # epochs that only record gate statistics
    warmup_steps: int | None = None  # overrides warmup_epochs when set (short runs)
    a_plus: float = 1.5e-3
    a_minus: float = 5e-4  # "A_baseline" in the authors' code; the paper's text says 1e-4
    sigma: float = 1.0  # width of the Gaussian latency window, in time steps
    gate_clip: tuple[float, float] = (0.0, 2.0)
    dw_clip: float = 1.0
    latency: Literal["last", "first"] = "last"  # authors' code: last spike; paper text: first spike
    sites: list[str] = field(default_factory=lambda: ["classifier", "first_last_stage_dssa"])
