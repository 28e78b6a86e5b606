"""One batch contract for torchvision, ffcv and dali on the same data; parity with torchvision (reference)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pl_helpers import CLASSES, N_TRAIN, N_VAL, cached_loader, image_cfg

from pipelines import build_loader

BACKENDS = ["torchvision", "ffcv", "dali"]


def _path(backend, jpeg_tree, converted):
    return jpeg_tree if backend == "torchvision" else converted[backend]


def _epoch(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def _source_labels(tree, split):
    return Counter({k: len(list((tree / split / f"c{k}").iterdir())) for k in range(CLASSES)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_labels_shapes_layout(backend, jpeg_tree, converted):
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        loader = cached_loader(image_cfg(backend, _path(backend, jpeg_tree, converted)), split)
        assert loader.num_samples == n and len(loader) == n // 4
        batches = list(loader)
        for x, y in batches:
            assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and x.device.type == "cpu"
            assert x.is_contiguous(memory_format=torch.channels_last)
            assert y.dtype == torch.int64 and y.shape == (4,)
        labels = torch.cat([y for _, y in batches]).tolist()
        assert Counter(labels) == _source_labels(jpeg_tree, split)


@pytest.mark.parametrize("backend", ["ffcv", "dali"])
def test_eval_batches_match_torchvision(backend, jpeg_tree, converted):
    ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", jpeg_tree), "val"))
    x, y = _epoch(cached_loader(image_cfg(backend, converted[backend]), "val"))
    assert torch.equal(y, ref_y)  # same sample order
    diff = (x - ref_x).abs()
    print(f"{backend} eval vs torchvision: mean |d| {diff.mean():.4f}, p99 {diff.quantile(0.99):.3f}")
    # JPEG decoder (libjpeg-turbo vs PIL; ffcv also re-encodes) + resampler (INTER_AREA/DALI cubic vs PIL)
    assert diff.mean() < 0.1  # normalised units: ~0.1 * 0.225 * 255 = 6 grey levels
    assert diff.mean((1, 2, 3)).max() < 0.15  # every image, not only on average
    assert torch.allclose(x.mean((0, 2, 3)), ref_x.mean((0, 2, 3)), atol=0.03)  # per-channel statistics
    assert torch.allclose(x.std((0, 2, 3)), ref_x.std((0, 2, 3)), rtol=0.03)


@pytest.mark.parametrize("backend", ["ffcv", "dali"])
def test_train_crops_equal_torchvision(backend, jpeg_tree, converted):
    """ffcv and DALI draw crop windows and flips from the same per-sample seeds as timm in torchvision."""
    ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", jpeg_tree), "train"))
    x, y = _epoch(cached_loader(image_cfg(backend, converted[backend]), "train"))
    assert torch.equal(y, ref_y)
    diff = (x - ref_x).abs()
    print(f"{backend} train vs torchvision: mean |d| {diff.mean():.4f}")
    assert diff.mean() < 0.1 and diff.mean((1, 2, 3)).max() < 0.2  # decoder + resampler only


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_reproduces_batches(backend, jpeg_tree, converted):
    extra = {} if backend == "ffcv" else dict(augment="rand-m9-n3-mstd0.5-inc1", mixup=True,
                                              label_smoothing=0.1, cutout=True)
    loader = cached_loader(image_cfg(backend, _path(backend, jpeg_tree, converted), **extra), "train", seed=3)
    loader.set_epoch(1)
    full = list(loader)
    loader.set_epoch(1, start_batch=5)
    resumed = list(loader)
    assert len(resumed) == len(full) - 5
    for (a, ya), (b, yb) in zip(full[5:], resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    loader.set_epoch(2)
    other = list(loader)
    assert not torch.equal(torch.cat([y for _, y in other]), torch.cat([y for _, y in full]))
    if extra:  # mixup on: soft targets [B, K] with label smoothing folded in
        y = full[0][1]
        assert y.shape == (4, CLASSES) and y.dtype == torch.float32
        assert torch.allclose(y.sum(1), torch.ones(4)) and y.min() >= 0.1 / CLASSES - 1e-6


def test_cifar_dali_arrays_match_torchvision(cifar):
    src, out, xs, ys = cifar
    for split in ("train", "val"):
        cfg = dict(dataset="cifar10", path=str(src), batch_size=10, workers=0, input_size=[3, 32, 32])
        ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", **cfg), split))
        x, y = _epoch(cached_loader(image_cfg("dali", **{**cfg, "path": str(out)}), split))
        assert sorted(y.tolist()) == sorted(ys[:50].tolist() if split == "train" else ys[50:].tolist())
        assert torch.equal(y, ref_y)
        if split == "val":  # raw pixels, no resize: exact
            assert torch.allclose(x, ref_x, atol=1e-5)
        mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
        std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
        pixels = torch.tensor(xs[:50] if split == "train" else xs[50:]).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(x.mean((0, 2, 3)), ((pixels - mean) / std).mean((0, 2, 3)), atol=1e-4)


def test_cifar_torchvision_reads_release_directly(cifar):
    src, _, xs, ys = cifar
    cfg = image_cfg("torchvision", dataset="cifar10", path=str(src), batch_size=10, workers=0,
                    input_size=[3, 32, 32])
    loader = cached_loader(cfg, "val")
    x, y = _epoch(loader)
    assert y.tolist() == ys[50:].tolist()
    assert np.allclose(x[0, 0, 0, 0].item(), (xs[50][0, 0, 0] / 255 - 0.4914) / 0.2023, atol=1e-5)


def test_cifar_ffcv_raw_images_equal_torchvision(cifar, data_root):
    src, _, xs, ys = cifar
    cfg = dict(dataset="cifar10", batch_size=10, workers=1, input_size=[3, 32, 32])
    ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", path=str(src), **cfg), "val"))
    x, y = _epoch(cached_loader(image_cfg("ffcv", path=str(data_root / "cifar_ffcv"), **cfg), "val"))
    assert torch.equal(y, ref_y) and torch.allclose(x, ref_x, atol=1e-5)  # raw pixels, full window


def test_fashion_mnist_idx_and_converted_agree(data_root):
    from pl_fixtures import write_fashion_mnist

    from tools.convert.api import convert

    src = data_root / "fmnist"
    x, y = write_fashion_mnist(src)
    convert("fashion-mnist", src, data_root / "fmnist_dali", "dali", progress=False, workers=1)
    cfg = dict(dataset="fashion_mnist", batch_size=5, workers=0, input_size=[3, 28, 28])
    ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", path=str(src), **cfg), "val"))
    got_x, got_y = _epoch(cached_loader(image_cfg("dali", path=str(data_root / "fmnist_dali"), **cfg), "val"))
    assert ref_y.tolist() == got_y.tolist() == y[30:].tolist()
    assert torch.allclose(ref_x, got_x, atol=1e-5)
    assert torch.equal(ref_x[:, 0], ref_x[:, 1]) and torch.equal(ref_x[:, 1], ref_x[:, 2])  # grey -> RGB
    assert torch.allclose(ref_x[0, 0], (torch.tensor(x[30]).float() / 255 - 0.2860) / 0.3530, atol=1e-5)


# data.train_crop / crop_scale / crop_ratio / crop_padding / hflip / crop_pct: every backend, same draws
RECIPES = {"rrc-narrow-flip": dict(train_crop="rrc", crop_scale=[0.5, 0.9], crop_ratio=[0.9, 1.1], hflip=1.0),
           "pad8-noflip": dict(train_crop="pad", crop_padding=8, hflip=False),
           "none-eval80": dict(train_crop="none", crop_pct=0.8)}


@pytest.mark.parametrize("backend", ["ffcv", "dali"])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_keys_equal_torchvision(name, backend, jpeg_tree, converted):
    keys = RECIPES[name]
    split = "val" if "crop_pct" in keys else "train"
    ref_x, ref_y = _epoch(cached_loader(image_cfg("torchvision", jpeg_tree, **keys), split))
    x, y = _epoch(cached_loader(image_cfg(backend, converted[backend], **keys), split))
    assert torch.equal(y, ref_y)
    diff = (x - ref_x).abs()
    assert diff.mean() < 0.1 and diff.mean((1, 2, 3)).max() < 0.2, (name, diff.mean())  # decoder+resampler
    default_x, _ = _epoch(cached_loader(image_cfg(backend, converted[backend]), split))
    assert (x - default_x).abs().mean() > 0.2  # the keys change the batches (same data, same seeds)


def test_recipe_keys_act_as_named(jpeg_tree, converted):
    """hflip 1 vs 0 mirrors every rrc crop; pad leaves black borders; none keeps the whole image."""
    path = converted["ffcv"]
    flip1, _ = _epoch(cached_loader(image_cfg("ffcv", path, **RECIPES["rrc-narrow-flip"]), "train"))
    flip0, _ = _epoch(cached_loader(image_cfg("ffcv", path, **{**RECIPES["rrc-narrow-flip"], "hflip": 0.0}),
                                    "train"))
    assert torch.allclose(flip1, flip0.flip(-1), atol=1e-5)
    padded, _ = _epoch(cached_loader(image_cfg("ffcv", path, **RECIPES["pad8-noflip"]), "train"))
    black = -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])  # ImageNet mean/std
    edge_black = [(padded[i, :, :, 0] - black.view(3, 1)).abs().max() < 1e-4 or
                  (padded[i, :, 0, :] - black.view(3, 1)).abs().max() < 1e-4 for i in range(len(padded))]
    assert 0 < sum(edge_black) < len(padded)  # offsets 0..16 of 8: most images shifted, some not on an edge
    loader = cached_loader(image_cfg("ffcv", path, train_crop="none", hflip=0.0), "train")
    _epoch(loader)
    hw = loader._hw  # [N, 2] stored image sizes: every window is the whole image, none flipped
    assert np.array_equal(loader._windows, np.stack([0 * hw[:, 0], 0 * hw[:, 0], hw[:, 0], hw[:, 1],
                                                     0 * hw[:, 0]], 1))


def test_ffcv_fills_seed_free_windows_once(jpeg_tree, converted, monkeypatch):
    """Evaluation windows, and training windows without random crops or flips, draw nothing: each sample's
    is computed once and reused by later epochs; flips are drawn again every epoch."""
    from pipelines import crops, draws

    path, real, calls = converted["ffcv"], draws.sample_windows, []
    monkeypatch.setattr(draws, "sample_windows", lambda r, train, hw, seeds: calls.extend([train] * len(hw))
                        or real(r, train, hw, seeds))
    ev = build_loader(image_cfg("ffcv", path), "val")  # not cached: its table starts empty
    first, _ = _epoch(ev)
    assert calls == [False] * len(first)
    ev.set_epoch(1)
    second, _ = _epoch(ev)
    assert len(calls) == len(first) and torch.equal(first, second)
    expect = [crops.sample_window(ev.recipe, False, int(h), int(w), 0) for h, w in ev._hw]  # no seed used
    assert np.array_equal(ev._windows, np.array(expect))
    still = build_loader(image_cfg("ffcv", path, train_crop="none", hflip=0.0), "train")
    for epoch in (0, 1):
        still.set_epoch(epoch)
        _epoch(still)
    filled = calls.count(True)
    assert len(still.indices()) <= filled <= len(still._hw)  # the whole image: once per sample, not again
    flips = []
    drawn = build_loader(image_cfg("ffcv", path, train_crop="none", hflip=0.5), "train")
    for epoch in (0, 1):
        drawn.set_epoch(epoch)
        _epoch(drawn)
        flips.append(drawn._windows[:, 4].copy())
    assert calls.count(True) - filled == 2 * len(drawn.indices()) and not np.array_equal(*flips)
