"""DA-SSDP: synchrony-gated, dopamine-modulated plasticity as a post-optimizer-step training hook."""
from dassdp.config import PRESETS, DASSDPConfig
from dassdp.hook import DASSDPHook, TrainingHook
from dassdp.sites import SiteError

__all__ = ["DASSDPConfig", "DASSDPHook", "PRESETS", "SiteError", "TrainingHook", "build_hook"]


def build_hook(cfg: DASSDPConfig) -> DASSDPHook | None:
    """The DA-SSDP hook when `dassdp.enabled`, else None."""
    return DASSDPHook(cfg) if cfg.enabled else None
