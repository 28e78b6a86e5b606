"""Every config in configs/ loads strictly, mirrors the seed's recipe, and builds its model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from launch import parts
from launch.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The seed's values (xyshi2000/SpikingResformer configs/): model, T, epochs, batch, lr, wd, augment, size
SEED = {
    "main/spikingresformer_ti": ("spikingresformer_ti", 4, 320, 32, 1e-3, 0.01, "rand-m7-mstd0.5-inc1", 224),
    "main/spikingresformer_s": ("spikingresformer_s", 4, 320, 32, 1e-3, 0.01, "rand-m7-mstd0.5-inc1", 224),
    "main/spikingresformer_m": ("spikingresformer_m", 4, 320, 28, 8e-4, 0.01, "rand-m9-mstd0.5-inc1", 224),
    "main/spikingresformer_l": ("spikingresformer_l", 4, 320, 16, 5e-4, 0.01, "rand-m9-n3-mstd0.5-inc1", 224),
    "direct_training/cifar10": ("spikingresformer_cifar", 4, 600, 128, 5e-4, 0.01, "rand-m7-n1-mstd0.5-inc1",
                                32),
    "direct_training/cifar100": ("spikingresformer_cifar", 4, 600, 128, 5e-4, 0.01, "rand-m7-n1-mstd0.5-inc1",
                                 32),
    "direct_training/cifar10dvs": ("spikingresformer_cifar", 16, 300, 8, 5e-4, 0.05, "augment", 64),
    "direct_training/dvs128gesture": ("spikingresformer_dvsg", 16, 300, 8, 1e-4, 0.05, "augment", 64),
    "transfer/cifar10": ("spikingresformer_s", 4, 100, 128, 1e-4, 0.01, "rand-m9-n1-mstd0.4-inc1", 128),
    "transfer/cifar100": ("spikingresformer_s", 4, 150, 128, 1e-4, 0.01, "rand-m9-n1-mstd0.4-inc1", 128),
    "transfer/cifar10dvs": ("spikingresformer_s", 10, 100, 48, 4e-5, 0.01, "augment", 128),
    "transfer/dvs128gesture": ("spikingresformer_s", 10, 100, 48, 1e-4, 0.05, "augment", 128),
}
FILES = sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml"))


def test_every_seed_config_is_mirrored():
    assert set(SEED) <= set(FILES) and "smoke" in FILES


@pytest.mark.parametrize("name", FILES)
def test_config_loads_and_builds(name):
    cfg = load_config(CONFIGS / f"{name}.yaml", notice=lambda m: None)
    assert cfg.dassdp.enabled
    if name in SEED:
        model, T, epochs, bs, lr, wd, aug, size = SEED[name]
        got = (cfg.model.name, cfg.model.T, cfg.train.epochs, cfg.data.batch_size, cfg.optim.lr,
               cfg.optim.weight_decay, cfg.data.augment, cfg.data.input_size[-1])
        assert got == SEED[name]
        assert cfg.data.label_smoothing == (0.0 if "dvs" in name else 0.1) and cfg.train.amp
        assert (cfg.sched.warmup_epochs, cfg.sched.warmup_lr, cfg.sched.min_lr) == (3, 1e-5, 1e-5)
        assert cfg.train.sync_bn == (name == "main/spikingresformer_l")
    with torch.device("meta"):  # full-size models without allocating them
        model = parts.build_model(cfg.model)
    out_classes = model.classifier.weight.shape[0]
    assert out_classes == cfg.model.num_classes and model.T == cfg.model.T
    assert set(model.dassdp_sites()) >= set(cfg.dassdp.sites)


@pytest.mark.parametrize("name", FILES)
def test_print_config_shows_auto_precision_and_fp32_evaluation(name, capsys):
    """What `dassdp-train --config FILE --print-config` prints: the precision fits the machine, evaluation
    is fp32 as in the official code."""
    from launch.train import main

    assert main(["--config", str(CONFIGS / f"{name}.yaml"), "--print-config"]) == 0
    train = yaml.safe_load(capsys.readouterr().out)["train"]
    assert train["amp_dtype"] == "auto" and train["eval_amp"] is False
