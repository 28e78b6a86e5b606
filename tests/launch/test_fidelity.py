"""A run does what the official run did by default: fp32 evaluation, the precision resolved and recorded,
and the official flat YAML files (written here) mapped onto the official run, DA-SSDP included."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from launch_toy import ToyNet

from launch.config import load_config
from launch.train import main

OFFICIAL = {  # the official repositories' flat files, as they ship them (keys and values)
    "cifar10": {"seed": 12450, "epochs": 600, "batch_size": 128, "T": 4, "model": "spikingresformer_cifar",
                "dataset": "CIFAR10", "augment": "rand-m7-n1-mstd0.5-inc1", "mixup": True, "cutout": False,
                "label_smoothing": 0.1, "workers": 16, "lr": 5e-4, "optimizer": "adamw",
                "weight_decay": 0.01, "input_size": [3, 32, 32]},
    "cifar10dvs": {"seed": 12450, "epochs": 100, "batch_size": 48, "T": 10, "model": "spikingresformer_s",
                   "dataset": "CIFAR10DVS", "augment": "augment", "mixup": True, "cutout": False,
                   "label_smoothing": 0.1, "workers": 16, "lr": 4e-5, "optimizer": "adamw",
                   "weight_decay": 0.01, "input_size": [3, 128, 128]},
}
TAIL = {"TET": False, "TET_phi": 1.0, "TET_lambda": 0.0, "save_latest": False, "test_only": False,
        "amp": True, "sync_bn": False}


def official_file(tmp_path, name: str, **change):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**OFFICIAL[name], **TAIL, **change}, sort_keys=False))
    return path


@pytest.fixture
def autocast_seen(monkeypatch):
    """(training mode, autocast on) of every forward of the toy model."""
    seen, forward = [], ToyNet.forward

    def spy(self, x):
        seen.append((self.training, torch.is_autocast_enabled("cpu")))
        return forward(self, x)

    monkeypatch.setattr(ToyNet, "forward", spy)
    return seen


def test_evaluation_runs_without_autocast_by_default(tmp_path, toy_train, autocast_seen, capsys):
    out = tmp_path / "r"
    assert toy_train(out, "train.epochs=1", "train.amp=true", "train.amp_dtype=bf16") == 0
    assert {a for train, a in autocast_seen if train} == {True}  # training: bf16 autocast
    assert {a for train, a in autocast_seen if not train} == {False}  # evaluation: fp32
    err = capsys.readouterr().err
    (epoch,) = [line for line in err.splitlines() if line.startswith("epoch 0: val loss")]
    assert epoch.endswith(", eval fp32")
    (said,) = [line for line in err.splitlines() if "precision: " in line]  # once
    assert said.startswith("dassdp-train: precision: train bf16 (bf16 requested")
    assert said.endswith("; eval fp32")
    run, summary = (json.loads((out / n).read_text()) for n in ("run.json", "summary.json"))
    assert run["precision"]["train"] == "bf16" and run["precision"]["eval"] == "fp32"
    assert summary["precision"] == {"train": "bf16", "eval": "fp32"}


def test_eval_amp_evaluates_under_the_training_autocast(tmp_path, toy_train, autocast_seen):
    out = tmp_path / "r"
    overrides = ("train.epochs=1", "train.amp=true", "train.amp_dtype=bf16", "train.eval_amp=true")
    assert toy_train(out, *overrides) == 0
    assert {a for train, a in autocast_seen if not train} == {True}
    assert json.loads((out / "summary.json").read_text())["precision"] == {"train": "bf16", "eval": "bf16"}


def test_fp16_on_a_cpu_trains_in_fp32_as_the_official_code_and_says_so(tmp_path, toy_train, autocast_seen):
    out = tmp_path / "r"
    assert toy_train(out, "train.epochs=1", "train.amp=true", "train.amp_dtype=fp16") == 0
    assert {a for _, a in autocast_seen} == {False}
    prec = json.loads((out / "run.json").read_text())["precision"]
    assert prec["train"] == "fp32" and "official code" in prec["reason"]


@pytest.mark.parametrize("name", ["cifar10", "cifar10dvs"])
def test_an_official_flat_file_is_the_official_run(tmp_path, capsys, name):
    path = official_file(tmp_path, name)
    assert main(["--config", str(path), "--print-config"]) == 0
    captured = capsys.readouterr()
    printed = yaml.safe_load(captured.out)
    assert printed["dassdp"]["enabled"] is True and printed["dassdp"]["preset"] == "code"
    assert printed["train"]["amp"] is True and printed["train"]["amp_dtype"] == "fp16"
    assert printed["train"]["eval_amp"] is False and printed["model"]["frozen_ema"] is True
    notice = captured.err.strip().splitlines()
    assert len(notice) == 1 and "dassdp.enabled=true" in notice[0] and "train.amp_dtype=fp16" in notice[0]
    assert "for the baseline add dassdp.enabled=false" in notice[0]
    data = printed["data"]
    if name == "cifar10dvs":  # the official code never mixes event frames and trains on one-hot targets
        assert (data["backend"], data["mixup"], data["label_smoothing"]) == ("dvs", False, 0.0)
        assert data["input_size"] == [3, 128, 128] and printed["model"]["T"] == 10
        for said in ("data.backend=dvs", "data.mixup=false", "data.label_smoothing=0.0",
                     "dassdp-convert cifar10dvs SRC OUT --T 10"):
            assert said in notice[0]
    else:
        assert (data["backend"], data["mixup"], data["label_smoothing"]) == ("torchvision", True, 0.1)
        assert "data.backend" not in notice[0]


def test_the_baseline_and_amp_false_from_an_official_file(tmp_path):
    path = official_file(tmp_path, "cifar10dvs", amp=False, dataset="DVS128Gesture",
                         model="spikingresformer_dvsg")
    notes = []
    cfg = load_config(path, ["dassdp.enabled=false"], notice=notes.append)
    assert not cfg.dassdp.enabled and cfg.train.amp is False and cfg.train.amp_dtype == "auto"
    assert cfg.data.backend == "dvs" and cfg.data.dataset == "dvs128gesture" and not cfg.data.mixup
    assert len(notes) == 1 and "train.amp_dtype" not in notes[0] and not cfg.model.frozen_ema
