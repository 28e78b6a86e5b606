"""`draws.sample_windows` (all samples at once, numpy) against `crops.sample_window` (one by one, the
reference: CPython's `random` and torch's generator, as the torchvision backend's timm transform)."""
import dataclasses

import numpy as np
import pytest
import torch

from pipelines import draws
from pipelines.base import mix_seed, mix_seeds
from pipelines.crops import sample_window
from pipelines.recipe import Recipe

RECIPE = Recipe(dataset="imagenet", size=(224, 224), mean=None, std=None, crop_pct=0.875, eval_resize=256,
                train_crop="rrc", crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), crop_padding=0,
                hflip=0.5, mixup_alpha=0.0, cutmix_alpha=0.0, num_classes=10)


def _cases(n=3000, seed=0):
    """Sizes and seeds: 63-bit seeds and ones below 2**32 (CPython keys them with one word), 0, images too
    thin for any attempt (the centred fallback, both sides), 1x1 and ordinary ones."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2 ** 63, n, dtype=np.int64)
    seeds[: n // 5] = rng.integers(0, 2 ** 32, n // 5)
    seeds[0] = 0
    hw = np.stack([rng.integers(1, 700, n), rng.integers(1, 700, n)], 1)
    hw[1:40] = (8, 900)
    hw[40:80] = (900, 8)
    hw[80:90] = (1, 1)
    return hw, seeds


def _reference(recipe, train, hw, seeds):
    return np.array([sample_window(recipe, train, int(h), int(w), int(s)) for (h, w), s in zip(hw, seeds)])


@pytest.mark.parametrize("change", [{}, {"hflip": 0.3}, {"hflip": 0.0}, {"hflip": 1.0},
                                    {"crop_scale": (0.9, 1.0), "crop_ratio": (0.2, 5.0)},
                                    {"train_crop": "none", "hflip": 0.7}, {"train": False}])
def test_windows_equal_the_scalar_draws(change):
    change = dict(change)
    train = change.pop("train", True)
    recipe = dataclasses.replace(RECIPE, **change)
    hw, seeds = _cases()
    got = draws.sample_windows(recipe, train, hw, seeds)
    assert got.shape == (len(seeds), 5)
    np.testing.assert_array_equal(got, _reference(recipe, train, hw, seeds))
    if train and recipe.random_crop:
        assert len({tuple(r) for r in got[100:, :4].tolist()}) > 0.9 * (len(seeds) - 100)  # really drawn


def test_samples_out_of_made_words_take_the_scalar_draw(monkeypatch):
    """With few words made per sample most run out mid-draw; they are drawn one by one, still equal."""
    monkeypatch.setattr(draws, "WORDS", 6)
    calls = []
    monkeypatch.setattr("pipelines.crops.sample_window",
                        lambda *a: calls.append(a) or sample_window(*a))
    hw, seeds = _cases(600, seed=1)
    got = draws.sample_windows(RECIPE, True, hw, seeds)
    np.testing.assert_array_equal(got, _reference(RECIPE, True, hw, seeds))
    assert 0 < len(calls) < len(seeds)  # first-attempt hits need 4-6 words: those stay vectorised


def test_flips_equal_torch_rand():
    seeds = np.random.default_rng(2).integers(0, 2 ** 63, 500, dtype=np.int64)
    for p in (0.0, 0.3, 0.5, 1.0):
        ref = [bool(torch.rand(1, generator=torch.Generator().manual_seed(int(s))) < p) for s in seeds]
        assert draws.torch_flips(seeds, p).tolist() == ref


def test_mix_seeds_equals_mix_seed():
    idx = np.concatenate([np.arange(300), np.random.default_rng(3).integers(0, 2 ** 62, 300)])
    for base in (0, mix_seed(12450, 3, 0x5A), 2 ** 63 - 1):
        assert mix_seeds(base, idx).tolist() == [mix_seed(base, int(i)) for i in idx]
