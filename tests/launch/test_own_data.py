"""Own data (issue 21): a small-image class-folder tree gets the tiny-image recipe by default; an `events`
tree fine-tunes from an ImageNet-format checkpoint with its class count taken from the manifest."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipelines import DataConfig, build_loader
from pipelines.recipe import fill_defaults, resolve
from tools.convert import convert

ROOT = Path(__file__).resolve().parents[2]
NMNIST = ROOT / "tests" / "data" / "events" / "sample_nmnist.bin"  # origin, licence: tests/data/README.md


def write_tree(root: Path, side: int, per_class: int = 6) -> Path:
    """class-folder PNG tree root/<class>/<i>.png of real photo crops (skimage), `side` px square."""
    import skimage.data as d

    photos = [d.astronaut(), d.coffee(), d.chelsea()]
    for k, name in enumerate(("bird", "cat")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(photos[(k + i) % 3]).crop((10 * i, 5 * k, 10 * i + 300, 5 * k + 300))
            img.resize((side, side), Image.BICUBIC).save(root / name / f"{i}.png")
    return root


def print_config(*overrides: str) -> dict:
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/demo.yaml", "--print-config",
           *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_small_folder_images_get_the_tiny_recipe(tmp_path):
    src, out = write_tree(tmp_path / "src", 32), tmp_path / "ffcv"
    man = convert("folder", src, out, "ffcv", val_fraction=0.34, workers=1, progress=False)
    assert man["image_sides"] == {"max": 32, "median": 32}
    # demo.yaml turns flips off; auto is what the tiny recipe resolves
    data = print_config("data.dataset=folder", f"data.path={out}", "data.hflip=auto")["data"]
    assert (data["train_crop"], data["crop_pct"], data["hflip"], data["num_classes"]) == ("none", 1.0, 0.5, 2)
    cfg = fill_defaults(DataConfig(dataset="folder", backend="ffcv", path=str(out), batch_size=2, workers=1,
                                   input_size=[3, 32, 32]))
    loader = build_loader(cfg, "train", seed=1)
    list(loader)
    hw = loader._hw  # every training window is the whole 32 px image: no RandomResizedCrop
    assert (loader._windows[:, :4] == np.stack([0 * hw[:, 0], 0 * hw[:, 0], hw[:, 0], hw[:, 1]], 1)).all()
    # a tree read directly (torchvision) is measured from its files: 96 px is ImageNet-like, 48 px tiny
    assert resolve(DataConfig(dataset="folder", path=str(write_tree(tmp_path / "big" / "train", 96)
                                                         .parent))).train_crop == "rrc"
    assert resolve(DataConfig(dataset="folder", path=str(write_tree(tmp_path / "mid" / "train", 48)
                                                         .parent))).train_crop == "none"
    data = print_config("data.dataset=folder", f"data.path={out}", "data.train_crop=rrc")["data"]
    assert data["crop_pct"] == 224 / 235  # an explicit choice wins; the eval crop follows it


def events_tree(root: Path) -> None:
    """Two classes of N-MNIST recordings: prefixes of the real file, class 1 mirrored in x."""
    recs = np.frombuffer(NMNIST.read_bytes(), np.uint8).reshape(-1, 5)  # [n, 5] N-MNIST binary records
    for k, name in enumerate(("left", "right")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            r = recs[: len(recs) - 300 * i].copy()
            if k:
                r[:, 0] = 33 - r[:, 0]
            (root / name / f"{i}.bin").write_bytes(r.tobytes())


def test_events_transfer_takes_classes_from_the_manifest(tmp_path):
    from tools.demo_dvs import write_official_checkpoint

    events_tree(tmp_path / "src")
    data, ckpt, run = tmp_path / "frames", tmp_path / "imagenet.pth", tmp_path / "run"
    convert("events", tmp_path / "src", data, "dali", T=2, sensor_size=(34, 34), train_per_class=3,
            workers=1, progress=False)
    write_official_checkpoint(ckpt, "spikingresformer_tiny")
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/transfer/cifar10dvs.yaml", "--transfer",
           str(ckpt), "--output-dir", str(run), "data.dataset=events", f"data.path={data}",
           "model.name=spikingresformer_tiny", "model.T=2", "data.input_size=[3,32,32]", "data.batch_size=2",
           "data.workers=1", "train.epochs=1", "train.max_steps_per_epoch=3", "train.eval_batches=1",
           "train.amp=false", "dassdp.warmup_steps=1", "log.progress=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "transfer:" in proc.stdout
    assert "dassdp: gate fitted at step 1 from 2 samples: " in proc.stderr and "corr(S, loss)=" in proc.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["num_classes"] == 2 and config["model"]["num_classes"] == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_ffcv_run_ends_without_a_traceback(tmp_path):
    """A finished ffcv run prints no "Exception ignored" traceback (numba dispatcher finalizer)."""
    src, out = write_tree(tmp_path / "src", 32), tmp_path / "ffcv"
    convert("folder", src, out, "ffcv", val_fraction=0.34, workers=1, progress=False)
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/demo.yaml", "--output-dir",
           str(tmp_path / "run"), "data.dataset=folder", f"data.path={out}", "data.batch_size=2",
           "train.epochs=2", "train.max_steps_per_epoch=2", "log.progress=false", "log.tensorboard=false",
           "dassdp.warmup_steps=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done:" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
