"""dassdp-bench loaders: the JPEG decode limit on the same files and threads; loaders as fractions of it."""
from __future__ import annotations

import json
import math

from tools.bench import cli, report


def test_quick_loaders_report_the_decode_limit_and_fractions_of_it(tmp_path):
    out = tmp_path / "loaders.json"
    cli.main(["loaders", "--quick", "--json", str(out), "--cache", str(tmp_path / "cache"), "--no-charts",
              "--set", "images=48", "--set", "val_images=8", "--set", "batch_size=16", "--set", "repeats=2",
              "--set", "cases=torchvision,decode"])
    doc = json.loads(out.read_text())
    report.validate(doc)
    rates = {r["case"]: r for r in doc["results"] if r["metric"] == "train_images_per_s"}
    assert set(rates) == {"torchvision", "decode"} and rates["decode"]["repeats"] == 2
    assert "libjpeg-turbo" in rates["decode"]["loader_threads"]["decode"]  # Pillow's wheels bundle it
    assert rates["decode"]["loader_threads"]["decode"].startswith("2 threads")  # the loaders' count
    (frac,) = [r for r in doc["ratios"] if r["metric"] == "decode_limit_fraction"]
    assert (frac["a"], frac["b"], frac["rounds"]) == ("torchvision", "decode", 2)
    assert all(0 < frac[k] < math.inf for k in ("min", "median", "max"))
    per_round = sorted(a / b for a, b in zip(rates["torchvision"]["samples"], rates["decode"]["samples"]))
    assert frac["min"] == per_round[0] and frac["max"] == per_round[-1]
    assert len(frac["load_average_start"]) == len(frac["load_average_end"]) == 3
    assert any(n.startswith("loaders: 1-minute load average") for n in doc["notes"])


def test_ffcv_profile_splits_an_image_into_its_stages(tmp_path):
    out = tmp_path / "loaders.json"
    cli.main(["loaders", "--quick", "--json", str(out), "--cache", str(tmp_path / "cache"), "--no-charts",
              "--set", "images=48", "--set", "val_images=48", "--set", "batch_size=16", "--set", "repeats=1",
              "--set", "warmup=0", "--set", "cases=ffcv", "--set", "window_samples=3000"])
    doc = json.loads(out.read_text())
    report.validate(doc)
    parts = {r["case"]: r for r in doc["results"] if r["metric"] == "ms_per_image_one_thread"}
    stages = ("decode (libffcv, full size)", "crop + INTER_AREA resize", "horizontal flip",
              "normalise (main thread, per image)")
    assert set(parts) == {f"ffcv profile: {name}" for name in stages}
    assert all(0 < r["median"] < 1000 and r["images"] == 48 for r in parts.values())
    windows = {r["case"]: r for r in doc["results"] if r["metric"] == "windows_per_s"}
    assert set(windows) == {"windows: draws.sample_windows", "windows: per-sample loop"}
    assert all(r["window_samples"] == 3000 and r["median"] > 0 for r in windows.values())
    (ratio,) = [r for r in doc["ratios"] if r["metric"] == "windows_per_s"]
    assert ratio["b"] == "windows: per-sample loop" and ratio["median"] > 0
