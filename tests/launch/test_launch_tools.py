"""tools/plot_run.py on a real run folder, and the smoke config's conversion on first use."""
from __future__ import annotations

import pytest
from PIL import Image

from launch.config import ConfigError
from pipelines.config import DataConfig


def test_plot_run_writes_curves_and_summary(tmp_path, toy_train, capsys):
    from tools.plot_run import main

    out = tmp_path / "run"
    assert toy_train(out, "train.epochs=2", "dassdp.enabled=true") == 0
    capsys.readouterr()
    assert main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "train loss:" in text and "val top-1: best" in text and "images/s" in text
    for name in ("loss", "accuracy", "lr", "throughput"):
        with Image.open(out / "plots" / f"{name}.png") as im:
            assert im.size[0] > 300
    assert (out / "plots" / "summary.txt").read_text().startswith("run:")
    assert main([str(tmp_path / "nothing")]) == 2
    assert "is nothing a dassdp-train run folder" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")


def test_smoke_data_converted_on_first_use(tmp_path, monkeypatch, fmnist_src):
    from launch import datasets

    out = tmp_path / "fm-dali"  # DALI layout: no numba compilation (ffcv's writer JITs for ~1 min here)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SRC", fmnist_src)
    datasets.ensure_data(DataConfig(dataset="fashion_mnist", backend="dali", path=str(out)), main=True)
    assert (out / "manifest.json").is_file() and list((out / "train").glob("images-*.npy"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_SRC", tmp_path / "absent")
    with pytest.raises(ConfigError, match="dassdp-convert fashion-mnist .* --format ffcv"):
        datasets.ensure_data(DataConfig(dataset="fashion_mnist", backend="ffcv", path=str(tmp_path / "f")),
                             main=True)
