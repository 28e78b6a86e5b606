"""DA-SSDP: synchrony-gated, dopamine-modulated plasticity as a post-optimizer-step training hook.

`HOOK` declares the hook to the trainer's registry (`launch.hooks`) as plain data: its YAML section
`dassdp:` (`DASSDPConfig`, switched by `enabled`) and its factory. This package never imports `launch`.
"""
from dassdp.config import PRESETS, DASSDPConfig
from dassdp.hook import DASSDPHook
from dassdp.sites import SiteError

__all__ = ["DASSDPConfig", "DASSDPHook", "HOOK", "PRESETS", "SiteError"]

HOOK = {"name": "dassdp", "config": DASSDPConfig, "build": DASSDPHook}
