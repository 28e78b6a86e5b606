"""DVS128 Gesture: the AEDAT 3.1 release (+ label csv, trial lists) and tonic's per-sample .npy tree."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .common import ConvertError, natural_key
from .sources import Plan, Split

GESTURE_CLASSES = [
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
]
SEP = "|"  # sample id of a release segment: "<file.aedat>|<t_start>|<t_end>"
END_HEADER = b"#!END-HEADER\r\n"


def read_aedat3(path: str | Path) -> dict[str, np.ndarray]:
    """AEDAT 3.1 polarity events as spikingjelly's `load_aedat_v3` reads them (every event of each packet)."""
    data = Path(path).read_bytes()
    pos = data.find(END_HEADER)
    if not data.startswith(b"#") or pos < 0:
        raise ConvertError(
            f"{path}: no AEDAT 3.1 header ending in '#!END-HEADER'; not a DVS128 Gesture file."
        )
    pos += len(END_HEADER)
    words, ovf = [], []
    while pos < len(data):
        if pos + 28 > len(data):
            raise ConvertError(f"{path}: truncated packet header at byte {pos}; re-extract the file.")
        (e_type,) = np.frombuffer(data, "<u2", 1, pos)
        e_size, _, e_ovf, e_cap = np.frombuffer(data, "<u4", 4, pos + 4)
        end = pos + 28 + int(e_cap) * int(e_size)
        if end > len(data):
            raise ConvertError(f"{path}: truncated event packet at byte {pos}; re-extract the file.")
        if e_type == 1:
            if e_size < 8:
                raise ConvertError(f"{path}: polarity packet with event size {e_size} < 8 bytes.")
            body = np.frombuffer(data, "<u4", int(e_cap) * int(e_size) // 4, pos + 28)
            pairs = body.reshape(int(e_cap), int(e_size) // 4)[:, :2]  # [n, (address, timestamp)]
            words.append(pairs)
            ovf.append(np.full(len(pairs), int(e_ovf), np.int64))
        pos = end
    pairs = np.concatenate(words) if words else np.zeros((0, 2), np.uint32)
    addr = pairs[:, 0].astype(np.int64)
    t = pairs[:, 1].astype(np.int64) | (np.concatenate(ovf) << 31 if ovf else 0)
    return {"t": t, "x": (addr >> 17) & 0x7FFF, "y": (addr >> 2) & 0x7FFF, "p": (addr >> 1) & 1}


@lru_cache(maxsize=1)
def _cached_aedat3(path: str) -> dict[str, np.ndarray]:
    return read_aedat3(path)


def load_gesture_sample(sample: str) -> dict[str, np.ndarray]:
    """Events of one sample id: a release segment 'file|t0|t1' (t0 <= t < t1) or a tonic .npy file."""
    if SEP in sample:
        path, t0, t1 = sample.split(SEP)
        ev = _cached_aedat3(path)
        mask = (ev["t"] >= int(t0)) & (ev["t"] < int(t1))
        return {k: v[mask] for k, v in ev.items()}
    try:
        arr = np.load(sample, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{sample}: unreadable .npy ({e}); re-extract it.") from None
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ConvertError(f"{sample}: expected tonic's [N, 4] (x, y, p, t) array, got shape {arr.shape}.")
    return {
        "x": arr[:, 0].astype(np.int64),
        "y": arr[:, 1].astype(np.int64),
        "p": arr[:, 2].astype(np.int64),
        "t": arr[:, 3].astype(np.int64),
    }


def _release_split(d: Path, trials: str) -> tuple[list[str], list[int]]:
    samples, labels = [], []
    for name in (d / trials).read_text().split():
        aedat, csv = d / name, d / f"{Path(name).stem}_labels.csv"
        if not aedat.exists() or not csv.exists():
            raise ConvertError(f"{d / trials}: lists {name}, but {aedat.name} or {csv.name} is missing.")
        try:
            rows = np.loadtxt(csv, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as e:
            raise ConvertError(f"{csv}: unreadable label csv ({e}).") from None
        for label, t0, t1 in rows[:, :3]:
            if not 1 <= label <= 11:
                raise ConvertError(f"{csv}: class {label} outside 1..11.")
            samples.append(SEP.join((str(aedat), str(t0), str(t1))))
            labels.append(int(label) - 1)
    return samples, labels


def _tonic_split(d: Path) -> tuple[list[str], list[int]]:
    samples, labels = [], []
    for trial in sorted((p for p in d.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        for f in sorted(trial.glob("*.npy"), key=lambda p: natural_key(p.name)):
            if not f.stem.isdigit() or not 0 <= int(f.stem) <= 10:
                raise ConvertError(f"{f}: tonic names samples <label 0..10>.npy.")
            samples.append(str(f))
            labels.append(int(f.stem))
    if not samples:
        raise ConvertError(f"{d}: no <user>_<lighting>/<label>.npy samples.")
    return samples, labels


def scan_dvs128gesture(root: Path, layout: str = "auto") -> Plan:
    """Original release (trials_to_train/test.txt, 1176/288 samples) or tonic's ibmGestureTrain/Test tree."""
    root = Path(root).resolve()
    rel = next((c for c in (root, root / "DvsGesture") if (c / "trials_to_train.txt").exists()), None)
    ton = next((c for c in (root, root / "DVSGesture") if (c / "ibmGestureTrain").is_dir()), None)
    found = "release" if rel else "tonic" if ton else None
    if found is None or layout not in ("auto", found):
        raise ConvertError(
            f"{root}: found neither DvsGesture/trials_to_train.txt (release) nor "
            f"DVSGesture/ibmGestureTrain/ (tonic) for --layout {layout}."
        )
    plan = Plan(
        {"type": "dvs128gesture", "path": str(rel or ton), "layout": found}, "events", list(GESTURE_CLASSES)
    )
    for split, part in (("train", "train"), ("val", "test")):
        if found == "release":
            samples, labels = _release_split(rel, f"trials_to_{part}.txt")
        else:
            samples, labels = _tonic_split(ton / f"ibmGesture{part.capitalize()}")
        plan.splits[split] = Split(np.asarray(labels, np.int64), samples)
    return plan
