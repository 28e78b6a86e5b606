"""The strict config system: YAML -> typed dataclasses, overrides, upstream flat files, CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch.cli import parse_args
from launch.config import ConfigError, all_keys, from_dict, load_config, to_dict, to_yaml

FIXTURES = Path(__file__).parent / "fixtures"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_float_from_yaml_string(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  lr: 5e-4\n"))
    assert cfg.optim.lr == 0.0005 and isinstance(cfg.optim.lr, float)


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "optim.lrr" in msg and "optim.lr" in msg.split("did you mean")[1]


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="did you mean optim"):
        load_config(write(tmp_path, "optimm:\n  lr: 1\n"))


@pytest.mark.parametrize("text,key", [
    ("train:\n  epochs: ten\n", "train.epochs"),
    ("train:\n  amp: yes_please\n", "train.amp"),
    ("train:\n  amp: 1\n", "train.amp"),
    ("optim:\n  lr: fast\n", "optim.lr"),
    ("data:\n  input_size: 224\n", "data.input_size"),
    ("data:\n  backend: tensorflow\n", "data.backend"),
    ("model: [1, 2]\n", "model"),
])
def test_wrong_type_names_key_value_and_type(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert key in str(e.value)


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-1", "optim.lr"), ("model.T=0", "model.T"), ("data.batch_size=0", "data.batch_size"),
    ("optim.lr=nan", "optim.lr"), ("train.epochs=0", "train.epochs"),
])
def test_absurd_values_rejected(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_booleans_only_true_false(tmp_path):
    assert load_config(None, ["dassdp.enabled=true"]).dassdp.enabled is True
    assert load_config(None, ["dassdp.enabled=false"]).dassdp.enabled is False
    with pytest.raises(ConfigError, match="dassdp.enabled"):
        load_config(None, ["dassdp.enabled=1"])


def test_dotted_overrides_checked_like_files():
    cfg = load_config(None, ["optim.lr=1e-3", "dassdp.enabled=false", "data.input_size=[3,32,32]"])
    assert cfg.optim.lr == 1e-3 and cfg.dassdp.enabled is False and cfg.model.img_size == 32
    with pytest.raises(ConfigError, match="command line: unknown key optim.lrr; did you mean optim.lr"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["optim.lr"])


def test_required_names_exist():
    keys = set(all_keys())
    for k in ["optim.lr", "train.epochs", "train.output_dir", "data.path", "data.backend", "dassdp.enabled"]:
        assert k in keys


def test_upstream_flat_config_mapped():
    notes = []
    cfg = load_config(FIXTURES / "official_cifar10.yaml", notice=notes.append)
    assert len(notes) == 1 and "upstream flat config" in notes[0]
    assert cfg.model.name == "spikingresformer_cifar" and cfg.model.T == 4 and cfg.model.num_classes == 10
    assert cfg.train.epochs == 600 and cfg.data.batch_size == 128 and cfg.optim.lr == 5e-4
    assert cfg.data.augment == "rand-m7-n1-mstd0.5-inc1" and cfg.data.dataset == "cifar10"
    assert cfg.data.mixup is True and cfg.data.label_smoothing == 0.1 and cfg.train.amp is True
    assert cfg.data.input_size == [3, 32, 32] and cfg.model.img_size == 32
    assert cfg.optim.weight_decay == 0.01 and cfg.train.seed == 12450 and cfg.train.tet is False


def test_roundtrip_yaml_and_dict(tmp_path):
    cfg = load_config(FIXTURES / "official_cifar10.yaml", ["dassdp.enabled=true"], notice=lambda m: None)
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_original_flags_and_paths():
    args, cfg = parse_args(["--data-path", "/d", "--output-dir", "out", "--resume", "auto",
                            "--transfer", "ck.pth", "--test-only", "--lr", "2e-4", "--T", "6", "model.T=5"])
    assert cfg.data.path == "/d" and cfg.train.output_dir == "out" and cfg.train.resume == "auto"
    assert cfg.train.transfer == "ck.pth" and cfg.train.test_only is True and cfg.optim.lr == 2e-4
    assert cfg.model.T == 5  # an explicit dotted override wins over a flag


def test_cli_print_config_and_error(tmp_path):
    exe = [sys.executable, "-m", "launch.train"]
    ok = subprocess.run(exe + ["--config", str(FIXTURES / "official_cifar10.yaml"), "--print-config"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    printed = yaml.safe_load(ok.stdout)
    assert printed["optim"]["lr"] == 0.0005 and printed["model"]["name"] == "spikingresformer_cifar"
    bad = subprocess.run(exe + ["optim.lrr=1", "--print-config"], capture_output=True, text=True)
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "optim.lrr" in lines[0] and "optim.lr?" in lines[0]


def test_every_config_file_loads_strictly():
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.rglob("*.yaml"))
    for f in files:
        cfg = load_config(f, notice=lambda m: None)
        assert cfg.model.num_classes and cfg.model.T >= 1, f
