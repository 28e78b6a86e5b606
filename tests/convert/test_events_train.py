"""Own event data end to end: a tree built from the real N-MNIST recording -> `dassdp-convert events` ->
`dassdp-train` with the dvs backend (tiny model, CPU, a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_convert_events_source import nmnist_tree

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.yaml"]


def test_tiny_model_trains_on_converted_nmnist_tree(tmp_path, real_data):
    nmnist_tree(tmp_path / "src", real_data, classes=("five", "one", "zero"), per_class=4)
    data = tmp_path / "frames"
    convert = [
        sys.executable,
        "-m",
        "tools.convert.cli",
        "events",
        tmp_path / "src",
        data,
        "--format",
        "dali",
        "--sensor-size",
        "34x34",
        "--T",
        "2",
        "--split-by",
        "time",
        "--train-per-class",
        "3",
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.run([str(c) for c in convert], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    args = [
        "model.name=spikingresformer_tiny",
        "model.T=2",
        "data.dataset=events",
        "data.backend=dvs",
        f"data.path={data}",
        "data.input_size=[3,16,16]",
        "data.augment=augment",
        "data.batch_size=3",
        "data.workers=1",
        "data.label_smoothing=0.0",
        "train.epochs=1",
        "train.max_steps_per_epoch=3",
        "train.eval_batches=1",
        "dassdp.warmup_steps=1",
        "log.progress=false",
    ]
    run = tmp_path / "run"
    proc = subprocess.run(
        [*TRAIN, "--output-dir", str(run), *args, "data.num_classes=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and (run / "checkpoints" / "last.pt").is_file()
    # the class count of an `events` dataset must be given and match the manifest: one clear error
    proc = subprocess.run(
        [*TRAIN, "--output-dir", str(tmp_path / "bad"), *args, "data.num_classes=4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "lists 3 classes but data.num_classes=4: set data.num_classes=3" in (
        proc.stdout + proc.stderr
    )
