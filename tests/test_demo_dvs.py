"""`python -m tools.demo_dvs --tiny`: the DVS transfer walk-through end to end (real CLIs, tiny sizes)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tools import demo_dvs

ROOT = Path(__file__).resolve().parents[1]


def test_bar_events_depend_on_class_and_fit_the_sensor():
    """Synthetic recordings: inside 128x128, sorted in time, both polarities, class-dependent direction."""
    a, b = demo_dvs.bar_events(0, seed=1), demo_dvs.bar_events(5, seed=1)
    for ev in (a, b):
        assert ev[:, 1:3].min() >= 0 and ev[:, 1:3].max() < 128
        assert np.all(np.diff(ev[:, 0]) >= 0) and set(np.unique(ev[:, 3])) == {0, 1}
    # class 0 moves along +x, class 5 along -x: ON events' mean x rises in one and falls in the other
    def drift(ev):
        on = ev[ev[:, 3] == 1]
        half = len(on) // 2
        return on[half:, 1].mean() - on[:half, 1].mean()
    assert drift(a) > 10 and drift(b) < -10


def test_tiny_walkthrough_end_to_end(tmp_path):
    """Tree -> dassdp-convert -> official-format checkpoint -> --transfer fine-tune -> --test-only."""
    proc = subprocess.run([sys.executable, "-m", "tools.demo_dvs", "--tiny", "--work", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    base = tmp_path / "src" / "CIFAR10DVS"
    assert sorted(p.name for p in base.iterdir()) == sorted(demo_dvs.CLASSES)
    manifest = json.loads((tmp_path / "cifar10dvs-t2" / "manifest.json").read_text())
    assert manifest["kind"] == "frames" and manifest["classes"] == sorted(demo_dvs.CLASSES)
    assert demo_dvs.REAL_SAMPLE.is_relative_to(ROOT)  # the repo's own copy, never a folder beside it
    assert manifest["splits"]["train"]["count"] == 40
    assert manifest["splits"]["val"]["count"] == 21  # the real recording is airplane's first file
    assert (base / "airplane" / "cifar10_airplane_0.aedat4").is_file()
    import torch

    ckpt = torch.load(tmp_path / "spikingresformer_tiny_imagenet_official_format.pth", weights_only=True)
    assert list(ckpt) == ["model"] and ckpt["model"]["classifier.weight"].shape[0] == 1000
    assert "transfer: loaded" in out and "dropped: classifier.weight" in out
    assert "SOPs/image" in out and "test: loss" in out
    last = [ln for ln in out.splitlines() if ln.startswith("demo-dvs: test_acc=")]
    assert last and "gate_fitted=1" in last[-1], out[-2000:]
    acc = float(last[-1].split("test_acc=")[1].split()[0])
    assert 0.0 <= acc <= 1.0
