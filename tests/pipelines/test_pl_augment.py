"""Batched RandAugment against timm's PIL ops; DVS augment semantics; config-string parsing."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from pl_fixtures import photo_crops
from timm.data.auto_augment import LEVEL_TO_ARG, NAME_TO_OP

from pipelines.dvs_augment import dvs_augment
from pipelines.randaugment import INCREASING, PLAIN, BatchRandAugment, apply_op, parse

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
FILL = (124, 116, 104)


@pytest.fixture(scope="module")
def photos():
    return photo_crops(4, 1, (48, 64))


@pytest.mark.parametrize("name", sorted(set(INCREASING + PLAIN)))
def test_each_op_matches_timm(name, photos, monkeypatch):
    x = torch.tensor(np.stack(photos)).permute(0, 3, 1, 2).float()
    for sign in (1.0, -1.0):
        monkeypatch.setattr(random, "random", lambda s=sign: 0.9 if s < 0 else 0.1)  # timm's _randomly_negate
        args = LEVEL_TO_ARG[name](7.0, {}) if LEVEL_TO_ARG[name] else ()
        ref = np.stack([np.asarray(NAME_TO_OP[name](Image.fromarray(a), *args, fillcolor=FILL,
                                                    resample=Image.BICUBIC)) for a in photos])
        ref = torch.tensor(ref).permute(0, 3, 1, 2).float()
        level, signs = torch.full((4,), 7.0), torch.full((4,), sign)
        out = apply_op(name, x.clone(), level, signs, torch.tensor(FILL).float())
        d = (out.round().clamp(0, 255) - ref).abs()
        if name in GEOMETRIC:  # torch bicubic (A=-0.75) vs PIL bicubic (A=-0.5) and edge handling
            assert d.mean() < 1.5 and (d > 16).float().mean() < 0.02, (name, d.mean())
        else:  # PIL rounds blends by truncation; we round to nearest
            assert d.mean() < 0.6 and d.max() <= 1, (name, d.mean(), d.max())


def test_parse_follows_timm_semantics():
    assert parse("rand-m9-n3-mstd0.5-inc1") == dict(m=9.0, n=3, p=0.5, mstd=0.5, mmax=10.0, inc=True)
    assert parse("rand-m7-mstd0.5-inc1")["n"] == 2  # timm default layers
    assert parse("rand-m9-mstd101")["mstd"] == float("inf")  # > 100: uniform magnitudes
    with pytest.raises(ValueError, match="section 'x3'"):
        parse("rand-m9-x3")
    with pytest.raises(ValueError, match="only timm RandAugment"):
        parse("augmix-m5")


def test_batch_randaugment_seeded_and_per_sample(photos):
    x = torch.tensor(np.stack(photos * 4)).permute(0, 3, 1, 2).float()  # [16, 3, 48, 64]
    ra = BatchRandAugment("rand-m9-n3-mstd0.5-inc1")
    a = ra(x.clone(), torch.Generator().manual_seed(1))
    b = ra(x.clone(), torch.Generator().manual_seed(1))
    c = ra(x.clone(), torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255 and torch.equal(a, a.round())
    changed = (a != x).flatten(1).any(1).float().mean()
    assert 0.5 <= changed <= 1.0  # n=3, p=0.5: 1 - 0.5^3 = 87.5% of samples get at least one op
    same_img = [torch.equal(a[i], a[i + 4]) for i in range(4)]
    assert not all(same_img)  # identical inputs, different per-sample draws


def test_dvs_augment_same_for_all_frames_and_flips_half():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 1, 2, 24, 24, generator=g).expand(64, 5, 2, 24, 24).contiguous()  # equal frames
    out = dvs_augment(base, torch.Generator().manual_seed(3))
    assert out.shape == base.shape
    assert torch.equal(out, out[:, :1].expand_as(out))  # one transform per sample, applied to every frame
    assert not torch.equal(out, base)
    flipped = sum(torch.allclose(out[i, 0], base[i, 0].flip(-1)) for i in range(64))
    same = sum(torch.allclose(out[i, 0], base[i, 0]) for i in range(64))
    assert flipped + same < 64  # roll/rotate/cutout change what a flip alone would give
    assert torch.equal(dvs_augment(base, torch.Generator().manual_seed(3)), out)
