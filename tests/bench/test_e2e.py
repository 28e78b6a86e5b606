"""dassdp-bench e2e of a shipped config: `python -m launch.train` as a user runs it, and the official side."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torchvision.datasets.cifar as tv_cifar

from pipelines.sources import cifar
from tools.bench import cli, report
from tools.bench.cifar_data import build_cifar

TINY = ["e2e", "--no-charts", "--set", "config=configs/direct_training/cifar10.yaml",
        "--set", "overrides=model.name=spikingresformer_tiny", "--set", "batch_size=2", "--set", "steps=3",
        "--set", "warmup_steps=1", "--set", "images=12", "--set", "val_images=4", "--set", "timeout_s=300",
        "--set", "repeats=1"]


def test_cifar_files_read_alike_by_ours_and_torchvision(tmp_path, monkeypatch):
    root = build_cifar(tmp_path / "c10", "cifar10", 23, 7)
    ours = cifar(root, "train", hundred=False)
    assert ours.images.shape == (23, 32, 32, 3) and set(ours.labels) == set(range(10))
    assert ours.images.std() > 20  # photo crops, not a flat fill
    raw = pickle.load(open(root / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    assert isinstance(raw["data"], np.ndarray) and raw["data"].shape[1] == 3072  # the release's layout
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # as tools/bench/official_e2e.py
    theirs = tv_cifar.CIFAR10(str(root), train=True, download=False)
    assert np.array_equal(theirs.data, ours.images) and theirs.targets == ours.labels.tolist()
    assert len(theirs.classes) == 10 and len(tv_cifar.CIFAR10(str(root), train=False).data) == 7
    hundred = build_cifar(tmp_path / "c100", "cifar100", 12, 4)
    labels = cifar(hundred, "train", hundred=True).labels.tolist()
    assert tv_cifar.CIFAR100(str(hundred), train=True).targets == labels
    with pytest.raises(ValueError, match="data.dataset='imagenet'"):
        build_cifar(tmp_path / "x", "imagenet", 4, 4)


def _side(doc: dict, case: str) -> dict[str, dict]:
    return {r["metric"]: r for r in doc["results"] if r["case"] == case}


def test_shipped_config_trains_in_a_subprocess_official_skipped_and_said(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    assert cli.main([*TINY, "--json", str(out), "--cache", str(tmp_path / "cache")]) == 0
    doc = json.loads(out.read_text())
    report.validate(doc)
    assert doc["environment"]["hardware"]["vector_isa"]
    ours = _side(doc, "ours")
    assert {r["case"] for r in doc["results"]} == {"ours"} and doc["ratios"] == []
    assert set(ours) == {"train_images_per_s", "startup_s", "peak_rss_mib", "peak_tree_rss_mib"}
    for rec in ours.values():
        assert rec["median"] > 0 and rec["steps"] == 3 and rec["steps_excluded"] == 1
    assert ours["peak_rss_mib"]["median"] > 100 and ours["peak_tree_rss_mib"]["median"] > 100  # torch alone
    assert ours["startup_s"]["label"] == "cifar10.yaml, B=2, spikingresformer_tiny"
    assert ours["train_images_per_s"]["precision"]["train"] in ("bf16", "fp16", "fp32")
    cmd = ours["startup_s"]["command"]
    assert "-m launch.train --config" in cmd and "configs/direct_training/cifar10.yaml" in cmd
    assert "data.batch_size=2" in cmd and "train.stop_after_steps=3" in cmd
    skipped = "official side skipped: no --official PATH given"
    assert any(skipped in n for n in doc["notes"]) and skipped in capsys.readouterr().out
    run = tmp_path / "cache" / "e2e-runs" / "ours" / "run"
    steps = [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2, 3]  # every step logged, none more
    img_s = 2 * 2 / sum(2 / r["img_per_s"] for r in steps[1:])  # the two steps after the warm-up one
    assert ours["train_images_per_s"]["median"] == pytest.approx(img_s)


# Stands in for the official main.py: its arguments, torchvision's CIFAR10 with download=True, one log line
# per step in its format; it never ends by itself (the bench stops it after `steps` steps).
FAKE_MAIN = """
import argparse, logging, time
import torchvision

p = argparse.ArgumentParser()
for flag in ("-c", "--data-path", "--output-dir", "--batch-size", "--epochs", "--print-freq", "--workers"):
    p.add_argument(flag)
a = p.parse_args()
assert open(a.c).read().startswith("dataset: CIFAR10")
n = len(torchvision.datasets.CIFAR10(root=a.data_path, train=True, download=True))
log = logging.getLogger("main")
log.addHandler(logging.StreamHandler())
log.setLevel(logging.DEBUG)
per_epoch = n // int(a.batch_size)
for i in range(10**6):
    time.sleep(0.3)
    if (i + 1) % (per_epoch // int(a.print_freq)) == 0:
        log.debug(" [{}/{}] it/s: {:.5f}, loss: 2.3".format(i % per_epoch + 1, per_epoch, 40.0))
"""


def test_official_side_runs_interleaved_and_gives_the_ratio(tmp_path):
    checkout = tmp_path / "official" / "SpikingResformer"
    (checkout / "configs" / "direct_training").mkdir(parents=True)
    (checkout / "main.py").write_text(FAKE_MAIN)
    (checkout / "configs" / "direct_training" / "cifar10.yaml").write_text("dataset: CIFAR10\n")
    out = tmp_path / "e2e.json"
    cli.main([*TINY, "--json", str(out), "--cache", str(tmp_path / "cache"), "--set", "repeats=2",
              "--set", "official_args=--workers,0", "--official", str(tmp_path / "official")])
    doc = json.loads(out.read_text())
    report.validate(doc)
    official = _side(doc, "official")
    assert official["train_images_per_s"]["repeats"] == 2 and official["startup_s"]["median"] > 0
    assert official["peak_rss_mib"]["median"] > 0 and official["startup_s"]["steps_excluded"] == 1
    assert official["startup_s"]["label"] == "main.py -c configs/direct_training/cifar10.yaml, B=2"
    assert "--print-freq 6" in official["startup_s"]["command"]  # 12 images / batch 2: a line per step
    # the stand-in sleeps 0.3 s per step: 2 timed steps of batch 2 take >= 0.6 s, less a poll's lateness
    assert 0 < official["train_images_per_s"]["max"] < 2 * 2 / 0.4
    (ratio,) = doc["ratios"]
    assert (ratio["a"], ratio["b"], ratio["rounds"]) == ("ours", "official", 2) and ratio["median"] > 0
    assert any("checked against xyshi2000/SpikingResformer 3f75127" in n for n in doc["notes"])
    with pytest.raises(SystemExit, match="main.py exists; pass the official SpikingResformer checkout"):
        cli.main([*TINY, "--json", str(out), "--cache", str(tmp_path / "cache"), "--official", str(tmp_path)])


def test_a_bad_override_is_one_line_before_any_run(tmp_path):
    with pytest.raises(SystemExit, match="model.nmae") as e:
        cli.main([*TINY, "--json", str(tmp_path / "e.json"), "--cache", str(tmp_path / "cache"),
                  "--set", "overrides=model.nmae=spikingresformer_tiny"])
    assert "\n" not in str(e.value.code) and not (tmp_path / "cache" / "e2e-runs").exists()
