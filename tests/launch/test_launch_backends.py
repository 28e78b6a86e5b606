"""The real model, DA-SSDP hook and loaders: a few training steps per loader backend on real Fashion-MNIST."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from launch.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def converted(fmnist_src, tmp_path_factory):
    """dassdp-convert output of the subset, per format (made on first use)."""
    from tools.convert.api import convert

    made = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            made[fmt] = tmp_path_factory.mktemp(f"fmnist-{fmt}")
            convert("fashion-mnist", fmnist_src, made[fmt], fmt, progress=False, overwrite=True, workers=1)
        return made[fmt]

    return get


@pytest.mark.parametrize("backend", ["torchvision", "ffcv", "dali"])
def test_tiny_model_trains_with_each_backend(backend, tmp_path, toy_train, fmnist_src, converted):
    path = fmnist_src if backend == "torchvision" else converted(backend)
    out = tmp_path / "run"
    rc = toy_train(out, "model.name=spikingresformer_tiny", "model.num_classes=10",
                   "data.dataset=fashion_mnist", f"data.backend={backend}", f"data.path={path}",
                   "data.input_size=[3,16,16]",
                   "data.workers=1", "train.epochs=1", "train.max_steps_per_epoch=3", "train.eval_batches=1",
                   "dassdp.enabled=true", "dassdp.warmup_steps=1", model="real", hook="real", loader="real")
    assert rc == 0
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert ck["step"] == 3 and ck["hooks"]["dassdp"]["fitted"] and ck["hooks"]["dassdp"]["applied_steps"] == 2
    assert (out / "metrics/epochs.csv").read_text().count("\n") == 2


def write_frames(out: Path, T: int = 4, hw: int = 16, classes: int = 10, n: dict | None = None) -> Path:
    """Event frames in dassdp-convert's DALI layout (docs/formats.md): class-dependent Poisson counts."""
    import json

    rng = np.random.default_rng(0)
    n = n or {"train": 40, "val": 10}
    rates = rng.uniform(0.2, 3.0, size=(classes, 1, 2, hw, hw))
    splits = {}
    for split, count in n.items():
        y = np.arange(count) % classes
        x = rng.poisson(np.broadcast_to(rates[y], (count, T, 2, hw, hw))).astype(np.uint16)
        (out / split).mkdir(parents=True, exist_ok=True)
        np.save(out / split / "frames-00000.npy", x)
        np.save(out / split / "labels-00000.npy", y.astype(np.int64))
        splits[split] = {"count": count, "per_class": np.bincount(y, minlength=classes).tolist(),
                         "shards": [{"file": f"{split}/frames-00000.npy", "count": count}]}
    manifest = {"tool": "dassdp-convert", "version": "test", "format": "dali", "kind": "frames",
                "source": {"type": "cifar10dvs"}, "classes": [f"c{k}" for k in range(classes)],
                "splits": splits, "shapes": {"frames": [T, 2, hw, hw]},
                "dtypes": {"frames": "uint16", "label": "int64"}, "files": {}, "options": {}, "skipped": [],
                "frames": {"T": T, "sensor_size": [hw, hw], "max_count": int(x.max()), "split_by": "number"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_tiny_model_trains_on_event_frames(tmp_path, toy_train):
    path = write_frames(tmp_path / "frames")
    out = tmp_path / "run"
    rc = toy_train(out, "model.name=spikingresformer_tiny", "model.T=4", "model.num_classes=10",
                   "data.dataset=cifar10dvs", "data.backend=dvs", f"data.path={path}",
                   "data.input_size=[3,16,16]", "data.augment=augment",
                   "data.workers=1", "train.epochs=1", "train.max_steps_per_epoch=3", "train.eval_batches=1",
                   "dassdp.enabled=true", "dassdp.warmup_steps=1", model="real", hook="real", loader="real")
    assert rc == 0
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert ck["step"] == 3 and ck["hooks"]["dassdp"]["applied_steps"] == 2
