"""load_weights: official files load strict with identical logits; transfer; extras; errors."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from spikingjelly.activation_based.functional import reset_net
from sr_reference import Reference, random_official_state

import models
from models.spikingresformer import ARCHS

ARCH, T, IMG = ARCHS["spikingresformer_tiny"], 2, 16


def _official_file(tmp_path, classes: int = 10, extras: bool = False):
    sd = random_official_state(ARCH, classes, seed=11)
    ckpt = {"model": dict(sd), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "epoch": 3,
            "max_acc1": 71.5, "lr_scheduler": {"last_epoch": 3}}
    if extras:  # what the DA-SSDP authors' code adds to the model's state dict
        for site in ("ssdp", "ssdp_dssa"):
            for k, v in (("A_plus", 1.5e-3), ("A_baseline", 5e-4), ("sigma", 1.0)):
                ckpt["model"][f"{site}.{k}"] = torch.tensor(v)
    path = tmp_path / "checkpoint_max_acc1.pth"
    torch.save(ckpt, path)
    return path, sd


def test_official_file_loads_strict_with_identical_logits(tmp_path):
    path, sd = _official_file(tmp_path, extras=True)
    model = models.create("spikingresformer_tiny", T=T, img_size=IMG, num_classes=10)
    report = models.load_weights(model, path)
    assert report.kind == "checkpoint" and not report.missing and not report.unexpected
    assert sorted(report.set_aside) == sorted(f"{s}.{k}" for s in ("ssdp", "ssdp_dssa")
                                              for k in ("A_plus", "A_baseline", "sigma"))
    assert report.loaded == len(sd) and "\n" not in report.summary() and "set aside" in report.summary()
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(x)
        torch.testing.assert_close(ours, Reference(ARCH, sd, T, IMG)(x), rtol=0, atol=1e-5)
    for k, v in model.state_dict().items():  # every tensor came from the file
        assert torch.equal(v, sd[k].to(v.dtype)), k


def test_transfer_into_ten_classes_drops_exactly_the_classifier(tmp_path):
    path, sd = _official_file(tmp_path, classes=1000)
    model = models.create("spikingresformer_tiny", T=T, img_size=IMG, num_classes=10)
    before = model.classifier.weight.clone()
    report = models.load_weights(model, path, transfer=True)
    assert report.dropped == ["classifier.weight"]
    assert report.missing == ["classifier.weight"] and report.unexpected == []
    assert torch.equal(model.classifier.weight, before)
    assert torch.equal(model.layers[2][1].Wproj.weight, sd["layers.2.1.Wproj.weight"])


def test_shape_mismatch_is_one_error_naming_key_and_shapes(tmp_path):
    path, _ = _official_file(tmp_path, classes=1000)
    model = models.create("spikingresformer_tiny", T=T, img_size=IMG, num_classes=10)
    with pytest.raises(models.CheckpointError, match=r"classifier\.weight: checkpoint \(1000, 64\) vs model "
                                                     r"\(10, 64\)"):
        models.load_weights(model, path)


def test_missing_or_unexpected_entries_fail_strict(tmp_path):
    model = models.create("spikingresformer_tiny", T=T, img_size=IMG)
    sd = model.state_dict()
    sd.pop("layers.0.0.firing_rate_x")
    with pytest.raises(models.CheckpointError, match="layers.0.0.firing_rate_x"):
        models.load_weights(model, sd)
    sd = dict(model.state_dict(), **{"layers.9.weight": torch.zeros(1)})
    with pytest.raises(models.CheckpointError, match="layers.9.weight"):
        models.load_weights(model, sd)
    with pytest.raises(models.CheckpointError, match="does not exist"):
        models.load_weights(model, tmp_path / "nope.pth")


def test_our_checkpoints_ddp_prefix_and_safetensors(tmp_path):
    src = models.create("spikingresformer_tiny", T=T, img_size=IMG)
    with torch.no_grad():
        src.train()(torch.randn(2, 3, IMG, IMG))  # non-trivial buffers: rates and BN statistics
    reset_net(src)
    ddp = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": ddp, "step": 5}, tmp_path / "a.pt")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "b.safetensors"))
    for name, kind in (("a.pt", "checkpoint"), ("b.safetensors", "safetensors")):
        dst = models.create("spikingresformer_tiny", T=T, img_size=IMG)
        assert models.load_weights(dst, tmp_path / name).kind == kind
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), (name, k)


def test_build_model_loads_pretrained_and_checks_name(tmp_path):
    path, _ = _official_file(tmp_path)
    cfg = models.ModelConfig(name="spikingresformer_tiny", T=T, num_classes=10, img_size=IMG, in_channels=3,
                             pretrained=str(path))
    model = models.build_model(cfg)
    assert model.prologue[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="spikingresformer_x"):
        models.build_model(models.ModelConfig(name="spikingresformer_x"))
