"""Own event data end to end: a tree built from the real N-MNIST recording -> `dassdp-convert events` ->
`dassdp-train` with the dvs backend (tiny model, CPU, a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_convert_events_source import nmnist_tree

from pipelines import DataConfig, build_loader
from tools.convert import convert

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.yaml"]
OVERRIDES = """model.name=spikingresformer_tiny model.T=2 data.dataset=events data.backend=dvs
    data.input_size=[3,16,16] data.augment=augment data.batch_size=3 data.workers=1
    data.label_smoothing=0.0 train.epochs=1 train.max_steps_per_epoch=3 train.eval_batches=1
    dassdp.warmup_steps=1 log.progress=false"""


def test_tiny_model_trains_on_converted_nmnist_tree(tmp_path, real_data):
    src, data = tmp_path / "src", tmp_path / "frames"
    nmnist_tree(src, real_data, classes=("five", "one", "zero"), per_class=4)
    cmd = f"events {src} {data} --format dali --sensor-size 34x34 --T 2 --split-by time --train-per-class 3"
    cmd = [sys.executable, "-m", "tools.convert.cli", *cmd.split(), "--workers", "1", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    args = [f"data.path={data}", *OVERRIDES.split()]
    run = tmp_path / "run"
    cmd = [*TRAIN, "--output-dir", str(run), *args, "data.num_classes=3"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and (run / "checkpoints" / "last.pt").is_file()
    # the class count of an `events` dataset must be given and match the manifest: one clear error
    cmd = [*TRAIN, "--output-dir", str(tmp_path / "bad"), *args, "data.num_classes=4"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "lists 3 classes but data.num_classes is 4: set data.num_classes=3" in out


def test_dvs_loader_reads_an_events_dataset(tmp_path, real_data):
    """The dvs backend on `events` frames (.beton): DVS recipe, no normalisation, pos + neg as channel 3."""
    nmnist_tree(tmp_path / "src", real_data, classes=("a", "b"), per_class=3)
    out = tmp_path / "frames"
    man = convert("events", tmp_path / "src", out, "ffcv", T=2, sensor_size=(34, 34), train_per_class=2,
                  workers=1, progress=False)
    assert man["splits"]["train"]["count"] == 4
    cfg = DataConfig(dataset="events", backend="dvs", path=str(out), batch_size=2, workers=1,
                     input_size=[3, 34, 34], num_classes=2, order="sequential")
    x, y = next(iter(build_loader(cfg, "train", T=2)))
    assert tuple(x.shape) == (2, 2, 3, 34, 34) and y.tolist() == [0, 0]  # [B, T, pos/neg/sum, H, W]
    np.testing.assert_array_equal(x[:, :, 2], x[:, :, 0] + x[:, :, 1])
    assert x[0, :, :2].sum().item() == 4325  # a/0.bin: every event of the real recording, no resize
    cfg.num_classes = None  # null: the manifest's class count
    assert build_loader(cfg, "train", T=2).recipe.num_classes == 2
