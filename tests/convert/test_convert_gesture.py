"""DVS128 Gesture: AEDAT 3.1 release written by the test, tonic's .npy tree; frames against spikingjelly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number as sj_frames
from spikingjelly.datasets.utils import load_aedat_v3

from tools.convert import ConvertError, convert, read_samples, verify
from tools.convert.gesture import read_aedat3

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def _packet(e_type: int, words: np.ndarray, overflow: int = 0) -> bytes:
    n = len(words) // 2  # events of 8 bytes = 2 words
    head = struct.pack("<HHIIIIII", e_type, 1, 8, 4, overflow, n, n, n)
    return head + words.astype("<u4").tobytes()


def write_aedat3(path: Path, n: int, seed: int) -> dict:
    """AEDAT 3.1 file: polarity packets (x bits 17+, y bits 2+, p bit 1, valid bit 0) and a special packet."""
    rng = np.random.default_rng(seed)
    x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, 6_000_000, n))
    addr = (x << 17) | (y << 2) | (p << 1) | 1
    words = np.stack([addr, t], 1).reshape(-1)  # [2n] address, timestamp
    half = n // 2
    body = _packet(1, words[: 2 * half]) + _packet(0, np.array([5, 7, 9, 11])) + _packet(1, words[2 * half :])
    path.write_bytes(HEADER + body)
    return {"t": t}


def make_release(root: Path) -> Path:
    d = root / "DvsGesture"
    d.mkdir(parents=True)
    for split, users in (("train", ["user01_led", "user02_natural"]), ("test", ["user03_fluorescent"])):
        (d / f"trials_to_{split}.txt").write_text("".join(f"{u}.aedat\n" for u in users))
        for i, u in enumerate(users):
            write_aedat3(d / f"{u}.aedat", 4000, seed=len(u) + i)
            rows = [
                (3, 0, 1_500_000),
                (11, 1_500_000, 3_000_000),
                (3, 2_900_000, 5_000_000),
            ]  # overlap as user22
            (d / f"{u}_labels.csv").write_text(
                "class,startTime_usec,endTime_usec\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
            )
    return d


def test_aedat3_reader_equals_spikingjelly(tmp_path):
    f = tmp_path / "u.aedat"
    write_aedat3(f, 3001, seed=1)
    ours, ref = read_aedat3(f), load_aedat_v3(str(f))
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], ref[k])
    f.write_bytes(f.read_bytes()[:-6])
    with pytest.raises(ConvertError, match="u.aedat: truncated event packet"):
        read_aedat3(f)


@pytest.mark.parametrize("fmt", ["dali", "ffcv"])
def test_release_round_trip(tmp_path, fmt):
    d = make_release(tmp_path / "src")
    out = tmp_path / "out"
    man = convert("dvs128gesture", d.parent, out, fmt, T=16, progress=False)
    assert man["source"]["layout"] == "release" and len(man["classes"]) == 11
    assert man["splits"]["train"]["count"] == 6 and man["splits"]["val"]["count"] == 3
    assert verify(out)["val"] == 3
    got = list(read_samples(out, "train"))
    assert [lab for _, lab in got] == [2, 10, 2] * 2
    k = 0
    for user in ("user01_led", "user02_natural"):
        ev = load_aedat_v3(str(d / f"{user}.aedat"))
        rows = np.loadtxt(d / f"{user}_labels.csv", dtype=np.uint32, delimiter=",", skiprows=1)
        for _, t0, t1 in rows:  # spikingjelly's segmenting: t0 <= t < t1
            m = (ev["t"] >= t0) & (ev["t"] < t1)
            want = sj_frames({key: v[m] for key, v in ev.items()}, "number", 16, 128, 128)
            np.testing.assert_array_equal(got[k][0], want)
            k += 1


def test_tonic_npy_tree(tmp_path):
    root = tmp_path / "DVSGesture"
    rng = np.random.default_rng(0)
    arrays = {}
    for part in ("Train", "Test"):
        for trial in ("user10_led", "user2_natural"):
            (root / f"ibmGesture{part}" / trial).mkdir(parents=True)
            for label in (0, 10, 4):
                n = 500 + label
                arr = np.stack(
                    [
                        rng.integers(0, 128, n),
                        rng.integers(0, 128, n),
                        rng.integers(0, 2, n),
                        np.sort(rng.integers(0, 10**6, n)),
                    ],
                    1,
                )  # [N, 4] x, y, p, t
                np.save(root / f"ibmGesture{part}" / trial / f"{label}.npy", arr)
                arrays[(part, trial, label)] = arr
    man = convert("dvs128gesture", tmp_path, tmp_path / "out", "dali", T=5, progress=False)
    assert man["source"]["layout"] == "tonic" and man["splits"]["train"]["count"] == 6
    got = list(read_samples(tmp_path / "out", "val"))
    order = [(t, lab) for t in ("user2_natural", "user10_led") for lab in (0, 4, 10)]  # natural order
    assert [lab for _, lab in got] == [lab for _, lab in order]
    for (frames, _), (trial, lab) in zip(got, order):
        a = arrays[("Test", trial, lab)]
        ev = {"t": a[:, 3], "x": a[:, 0], "y": a[:, 1], "p": a[:, 2]}
        np.testing.assert_array_equal(frames, sj_frames(ev, "number", 5, 128, 128))
