"""Hooks by registry: a second training-time method registered from this file trains, saves and resumes."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from launch import hooks
from launch.checkpoint import load_checkpoint
from launch.config import ConfigError, load_config, to_yaml


@dataclass
class ToyScaleConfig:
    """The toy hook's section: `toy: {enabled: true, scale: 0.5}`."""

    enabled: bool = False
    scale: float = 1.0  # multiplies the classifier nudge

    def check(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"toy.scale={self.scale!r} must be positive")


class ToyScaleHook:
    """Counts the real optimizer steps it sees and nudges the classifier by `scale`."""

    def __init__(self, cfg: ToyScaleConfig):
        self.cfg, self.calls, self.steps_seen = cfg, torch.zeros((), dtype=torch.int64), []

    def setup(self, model, *, steps_per_epoch: int) -> None:
        self.model = model

    def after_optimizer_step(self, model, *, loss, epoch: int, step: int) -> dict:
        assert not torch.is_grad_enabled() and model is self.model
        model.classifier.weight.mul_(1 - 1e-3 * self.cfg.scale)
        self.calls += 1
        self.steps_seen.append(step)
        return {"calls": float(self.calls)}

    def state_dict(self) -> dict:
        return {"calls": self.calls.clone(), "scale": self.cfg.scale}

    def load_state_dict(self, sd: dict) -> None:
        self.calls = sd["calls"].clone()

    def close(self) -> None:
        self.model = None


@pytest.fixture
def toy_registered():
    built = []

    def build(cfg):
        built.append(ToyScaleHook(cfg))
        return built[-1]

    hooks.register_hook("toy", ToyScaleConfig, build)
    yield built
    hooks.unregister_hook("toy")


def test_toy_section_is_part_of_the_schema(toy_registered, tmp_path):
    cfg = load_config(None, ["toy.enabled=true", "toy.scale=0.5"])
    assert cfg.toy.enabled and cfg.toy.scale == 0.5 and "toy:" in to_yaml(cfg)
    assert list(hooks.build_hooks(cfg)) == ["toy"]  # DA-SSDP off by default
    with pytest.raises(ConfigError, match="unknown key toy.scal; did you mean toy.scale"):
        load_config(None, ["toy.scal=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("toy: {enabled: true, scale: 0}\n")
    with pytest.raises(ConfigError, match=f"{bad}: toy.scale=0.0 must be positive"):
        load_config(bad)


def test_toy_hook_trains_saves_and_resumes(toy_registered, tmp_path, toy_train):
    yaml = tmp_path / "toy.yaml"
    yaml.write_text("toy:\n  enabled: true\n  scale: 0.5\n")
    common = ["--config", str(yaml), "train.epochs=2", "train.grad_accum=2"]
    out = tmp_path / "run"
    assert toy_train(out, *common, "train.stop_after_steps=3", hook="real") == 0
    mid = load_checkpoint(out / "checkpoints/last.pt")
    assert mid["step"] == 3 and int(mid["hooks"]["toy"]["calls"]) == 3 and mid["hooks"]["toy"]["scale"] == 0.5
    assert toy_registered[-1].steps_seen == [0, 1, 2]  # once per real optimizer step, in order
    assert toy_train(out, *common, "--resume", "auto", hook="real") == 0
    end = load_checkpoint(out / "checkpoints/last.pt")
    assert end["step"] == 8 and int(end["hooks"]["toy"]["calls"]) == 8  # restored 3, then 5 more
    assert toy_registered[-1].steps_seen == [3, 4, 5, 6, 7]
    assert "dassdp" not in end["hooks"]


def test_dassdp_is_registered_and_enabled_decides(tmp_path):
    from dassdp import DASSDPHook

    assert hooks.build_hooks(load_config(None, ["dassdp.enabled=false"])) == {}  # nothing built or attached
    built = hooks.build_hooks(load_config(None, ["dassdp.enabled=true"]))
    assert list(built) == ["dassdp"] and isinstance(built["dassdp"], DASSDPHook)
    assert isinstance(built["dassdp"], hooks.TrainingHook)  # structural: no base class
    with pytest.raises(ConfigError, match="dassdp.sigma=0.0 must be positive"):
        load_config(None, ["dassdp.sigma=0"])
