"""--test-only (accuracy + SOP/energy table) and --transfer (classifier dropped, one-line report)."""
from __future__ import annotations

import torch
from launch_toy import REAL_ARGS

REAL = dict(model="real", hook="real", n=16)


def test_test_only_prints_sop_table(tmp_path, toy_train, capsys):
    out = tmp_path / "run"
    assert toy_train(out, *REAL_ARGS, "train.epochs=1", **REAL) == 0
    capsys.readouterr()
    assert toy_train(out, *REAL_ARGS, "--test-only", "--resume", "auto", **REAL) == 0
    text = capsys.readouterr().out
    assert "test: loss" in text and "top1" in text and "SOP" in text.upper()
    assert "best.pt" in text or "last.pt" in text
    assert (out / "test.txt").is_file()


def test_transfer_drops_classifier_and_reports(tmp_path, toy_train, capsys):
    import models
    from models.config import ModelConfig

    src = models.build_model(ModelConfig(name="spikingresformer_tiny", T=2, num_classes=7, img_size=8,
                                         in_channels=3, channels_last=False))
    official = tmp_path / "official.pth"
    torch.save({"model": src.state_dict()}, official)  # the official release's file layout
    out = tmp_path / "ft"
    assert toy_train(out, *REAL_ARGS, "train.epochs=1", "--transfer", str(official), **REAL) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("transfer:")]
    assert len(lines) == 1 and "classifier" in lines[0]
    ck = torch.load(out / "checkpoints/last.pt", weights_only=True)
    assert ck["model"]["classifier.weight"].shape[0] == 4
    stem = "prologue.0.weight" if "prologue.0.weight" in ck["model"] else next(iter(src.state_dict()))
    assert ck["model"][stem].shape == src.state_dict()[stem].shape
