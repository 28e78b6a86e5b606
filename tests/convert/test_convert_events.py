"""Event readers and frames against spikingjelly, on synthetic files and the real recording."""

from __future__ import annotations

import numpy as np
import pytest
import tonic
from convert_data import make_dvs_trees, raw_events
from spikingjelly.datasets import cifar10_dvs as sj_cifar
from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number as sj_frames

from tools.bench.synthetic_events import write_aedat2
from tools.convert import (
    ConvertError,
    convert,
    events_to_frames,
    read_aedat2,
    read_aedat4,
    read_samples,
    verify,
)


@pytest.mark.parametrize("n,T", [(1000, 10), (1003, 16), (7, 10), (10, 10), (1, 3)])
def test_frames_equal_spikingjelly(n, T):
    rng = np.random.default_rng(n + T)
    ev = {
        "t": np.sort(rng.integers(0, 10**6, n)),
        "x": rng.integers(0, 34, n),
        "y": rng.integers(0, 20, n),
        "p": rng.integers(0, 2, n),
    }
    ours = events_to_frames(ev, T, (34, 20))  # [T, 2, H, W]
    ref = sj_frames(ev, "number", T, 20, 34)
    assert ours.dtype == np.uint16 and ours.shape == (T, 2, 20, 34)
    np.testing.assert_array_equal(ours, ref)
    assert ours.sum() == n


def test_real_aedat4_frames_equal_spikingjelly(real_data):
    path = real_data / "events" / "sample.aedat4"
    ev = read_aedat4(path, transpose=False)
    raw = tonic.io.read_aedat4(str(path))
    assert len(ev["x"]) == 111_954 and (ev["x"] == raw["x"]).all() and (ev["y"] == raw["y"]).all()
    assert set(np.unique(ev["p"])) == {0, 1} and ev["x"].max() == 319 and ev["y"].max() == 239
    for T in (10, 16):
        np.testing.assert_array_equal(
            events_to_frames(ev, T, (320, 240)), sj_frames(ev, "number", T, 240, 320)
        )
    with pytest.raises(ConvertError, match="outside the sensor 128x128"):
        events_to_frames(ev, 10, (128, 128), path=str(path))
    cropped = events_to_frames(ev, 10, (128, 128), crop=True)
    assert 0 < cropped.sum() < 111_954


def test_aedat2_reader_equals_spikingjelly(tmp_path):
    ev = raw_events(5000, seed=3)
    f = tmp_path / "cifar10_cat_0.aedat"
    write_aedat2(f, *ev)
    ours, ref = read_aedat2(f), sj_cifar._load_origin_data(str(f))
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], np.asarray(ref[k]).astype(np.int64))
    np.testing.assert_array_equal(
        events_to_frames(ours, 10, (128, 128)), sj_frames(ref, "number", 10, 128, 128)
    )


def test_truncated_aedat2_is_named(tmp_path):
    f = tmp_path / "x.aedat"
    write_aedat2(f, *raw_events(100, seed=4))
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(ConvertError, match=r"x\.aedat: truncated AEDAT 2\.0"):
        read_aedat2(f)


def test_aedat4_transpose_matches_aedat2(tmp_path):
    """tonic's AEDAT4 (DV's DVS128 decoding), transposed, == spikingjelly's reading of the AEDAT 2.0 file."""
    a2, a4 = make_dvs_trees(tmp_path, classes=("cat",), per_class=1, n_events=3000)
    e2 = read_aedat2(next((a2 / "cat").glob("*.aedat")))
    e4 = read_aedat4(next((a4 / "CIFAR10DVS" / "cat").glob("*.aedat4")), transpose=True)
    for k in "xyp":
        np.testing.assert_array_equal(e2[k], e4[k])
    f2, f4 = events_to_frames(e2, 10, (128, 128)), events_to_frames(e4, 10, (128, 128))
    np.testing.assert_array_equal(f2, f4)
    untransposed = events_to_frames(
        read_aedat4(next((a4 / "CIFAR10DVS" / "cat").glob("*.aedat4")), False), 10, (128, 128)
    )
    np.testing.assert_array_equal(untransposed, f2.transpose(0, 1, 3, 2))


@pytest.mark.parametrize("fmt", ["dali", "ffcv"])
def test_cifar10dvs_round_trip_both_layouts(tmp_path, fmt):
    a2, tonic_root = make_dvs_trees(tmp_path / "src", per_class=4, n_events=800)
    outs = {}
    for name, root in (("aedat2", a2), ("tonic", tonic_root)):
        out = tmp_path / f"{name}_{fmt}"
        man = convert(
            "cifar10dvs", root, out, fmt, T=8, train_per_class=3, shard_size=3, workers=2, progress=False
        )
        assert man["source"]["layout"] == name and man["classes"] == ["airplane", "cat"]
        assert man["splits"]["train"]["per_class"] == [3, 3] and man["splits"]["val"]["per_class"] == [1, 1]
        assert man["shapes"] == {"frames": [8, 2, 128, 128]} and man["dtypes"]["frames"] == "uint16"
        assert verify(out) == {"files": len(man["files"]), "train": 6, "val": 2}
        outs[name] = out
    # expected: spikingjelly frames of the original AEDAT 2.0 files, first 3 per class train
    for split, sl in (("train", slice(0, 3)), ("val", slice(3, 4))):
        files = [f for c in ("airplane", "cat") for f in sorted((a2 / c).glob("*.aedat"))[sl]]
        want = [sj_frames(sj_cifar._load_origin_data(str(f)), "number", 8, 128, 128) for f in files]
        for out in outs.values():
            got = list(read_samples(out, split))
            assert [lab for _, lab in got] == [0] * len(want[: len(want) // 2]) + [1] * (len(want) // 2)
            for (x, _), w in zip(got, want):
                np.testing.assert_array_equal(x, w)


def test_cifar10dvs_corrupt_file(tmp_path):
    a2, _ = make_dvs_trees(tmp_path / "src", classes=("cat", "dog"), per_class=3, n_events=500)
    bad = a2 / "dog" / "cifar10_dog_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ConvertError, match="cifar10_dog_1.aedat: truncated"):
        convert("cifar10dvs", a2, tmp_path / "out", "dali", T=4, train_per_class=2, workers=1, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "train").exists()
    man = convert(
        "cifar10dvs",
        a2,
        tmp_path / "out",
        "dali",
        T=4,
        train_per_class=2,
        workers=1,
        skip_corrupt=True,
        progress=False,
    )
    assert [s["file"] for s in man["skipped"]] == [str(bad)]
    assert man["splits"]["train"]["per_class"] == [2, 1] and verify(tmp_path / "out")["train"] == 3


def test_truncated_real_aedat4_is_named(tmp_path, real_data):
    f = tmp_path / "cut.aedat4"
    f.write_bytes((real_data / "events" / "sample.aedat4").read_bytes()[:500_000])
    with pytest.raises(ConvertError, match=r"cut\.aedat4: unreadable AEDAT4 file"):
        read_aedat4(f)
