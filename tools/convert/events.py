"""Event recordings: AEDAT 2.0 (CIFAR10-DVS release) and AEDAT4 (tonic) readers, and frames by event count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import ConvertError, list_class_dirs
from .sources import Plan, Split, _class_files

CIFAR10DVS_SIZE = (128, 128)  # (W, H)


def _skip_header(data: bytes) -> int:
    """Byte offset of the event data: spikingjelly's rule (lines whose stripped text starts with '#')."""
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos : end + 1]
        try:
            text = line.decode().strip()
        except UnicodeDecodeError:
            return pos
        if not (text and text[0] == "#"):
            return pos
        pos += len(line)
        if end < 0:
            return pos


def aedat2_words(path: Path, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """AEDAT 2.0 file -> (address, timestamp) words, uint32 each; `fix` ends the error for a bad file."""
    data = Path(path).read_bytes()
    if not data.startswith(b"#!AER-DAT2"):  # every AEDAT 2.0 file starts with "#!AER-DAT2.0"
        raise ConvertError(f"{path}: not an AEDAT 2.0 file (no '#!AER-DAT2.0' header line); replace it with "
                           "the original recording or pass --skip-corrupt.")
    body = data[_skip_header(data) :]
    if len(body) % 8:
        raise ConvertError(f"{path}: truncated AEDAT 2.0 file ({len(body)} data bytes is not a multiple of 8 "
                           f"= one address/timestamp pair); {fix}.")
    words = np.frombuffer(body, ">u4")
    return words[0::2], words[1::2]


def read_aedat2(path: Path) -> dict[str, np.ndarray]:
    """CIFAR10-DVS AEDAT 2.0 file -> events t, x, y, p with spikingjelly's transpose/flip/invert applied."""
    addr, t = aedat2_words(path, "re-extract it")
    xr = (addr & 0xFE) >> 1
    yr = (addr & 0x7F00) >> 8
    pr = addr & 1
    return {
        "t": t.astype(np.int64),
        "x": (127 - yr).astype(np.int64),
        "y": (127 - xr).astype(np.int64),
        "p": (1 - pr).astype(np.int64),
    }


def read_aedat4(path: Path, transpose: bool = True) -> dict[str, np.ndarray]:
    """AEDAT4 file via tonic -> events; `transpose` swaps x and y (tonic's CIFAR10-DVS -> spikingjelly's)."""
    import tonic

    try:
        ev = tonic.io.read_aedat4(str(path))
    except BaseException as e:  # the Rust reader may raise pyo3's PanicException (a BaseException)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise ConvertError(
            f"{path}: unreadable AEDAT4 file ({type(e).__name__}: {e}); re-extract it."
        ) from None
    names = ev.dtype.names
    x, y = ev[names[1]].astype(np.int64), ev[names[2]].astype(np.int64)
    out = {"t": ev[names[0]].astype(np.int64), "x": x, "y": y, "p": ev[names[3]].astype(np.int64)}
    if transpose:
        out["x"], out["y"] = y, x
    return out


def frame_of_events(ev: dict[str, np.ndarray], T: int, split_by: str = "number") -> np.ndarray:
    """Frame index int64 [n] of each event, spikingjelly's two rules.

    number: in arrival order, frame i holds events [i*q, (i+1)*q) with q = n // T; the last takes the rest.
    time:   frame i holds t in [t0 + i*dt, t0 + (i+1)*dt) with dt = (t_max - t0) // T (>= 1, the unit of t),
            t0 = t_min; the last frame runs to t_max. Equal windows over the recording's duration.
    """
    n = len(ev["t"])
    if split_by == "time":
        t = ev["t"].astype(np.int64)
        t0 = t.min()
        dt = max((int(t.max()) - int(t0)) // T, 1)
        return np.minimum((t - t0) // dt, T - 1)
    if split_by != "number":
        raise ConvertError(f"--split-by {split_by}: use 'number' or 'time'.")
    q = n // T
    if q == 0:
        return np.full(n, T - 1, np.int64)
    return np.minimum(np.arange(n, dtype=np.int64) // q, T - 1)


def events_to_frames(
    ev: dict[str, np.ndarray],
    T: int,
    size: tuple[int, int],
    *,
    split_by: str = "number",
    crop: bool = False,
    path: str = "<events>",
) -> np.ndarray:
    """T frames (by event count or time window), 2 polarity channels -> uint16 [T, 2, H, W] (spikingjelly)."""
    W, H = size
    x, y, p = ev["x"], ev["y"], ev["p"]
    n = len(x)
    if n == 0:
        raise ConvertError(f"{path}: no events; the recording is empty or truncated.")
    frame = frame_of_events(ev, T, split_by)  # [n]
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H) & ((p == 0) | (p == 1))
    if not inside.all():
        if not crop:
            k = int(np.flatnonzero(~inside)[0])
            raise ConvertError(
                f"{path}: event {k} (x={x[k]}, y={y[k]}, p={p[k]}) is outside the sensor "
                f"{W}x{H}; pass --sensor-size WxH or --crop."
            )
        frame, x, y, p = frame[inside], x[inside], y[inside], p[inside]
    flat = ((frame * 2 + p) * H + y) * W + x
    counts = np.bincount(flat, minlength=T * 2 * H * W)
    if counts.max(initial=0) > np.iinfo(np.uint16).max:
        raise ConvertError(
            f"{path}: a pixel has {counts.max()} events in one frame, more than uint16 holds; "
            "use a larger --T."
        )
    return counts.astype(np.uint16).reshape(T, 2, H, W)  # [T, 2, H, W]


def load_events(path: str, transpose: bool = True) -> dict[str, np.ndarray]:
    """Read one sample: .aedat (AEDAT 2.0), .aedat4 (tonic), DVS128 Gesture segment or tonic .npy."""
    from .gesture import SEP, load_gesture_sample

    if SEP in path or path.endswith(".npy"):
        return load_gesture_sample(path)
    try:
        if path.endswith(".aedat4"):
            return read_aedat4(Path(path), transpose)
        return read_aedat2(Path(path))
    except OSError as e:
        raise ConvertError(f"{path}: cannot read ({e}).") from None


def _detect_layout(root: Path) -> tuple[str, Path]:
    if (root / "CIFAR10DVS").is_dir():
        return "tonic", root / "CIFAR10DVS"
    if root.name == "CIFAR10DVS" and any(root.glob("*/*.aedat4")):
        return "tonic", root
    for cand in (root, root / "extract"):
        if cand.is_dir() and any(cand.glob("*/*.aedat")):
            return "aedat2", cand
    raise ConvertError(
        f"{root}: found neither tonic's CIFAR10DVS/<class>/*.aedat4 nor the release's "
        "<class>/*.aedat (or extract/<class>/*.aedat); pass the dataset root."
    )


def scan_cifar10dvs(
    root: Path,
    layout: str = "auto",
    train_per_class: int = 900,
    order: str = "lexical",
    transpose: bool = True,
) -> Plan:
    """CIFAR10-DVS class tree (tonic AEDAT4 or AEDAT 2.0) -> plan; first `train_per_class` per class train.

    The official split is the first 900 / last 100 recordings of each class in torchvision DatasetFolder
    order, i.e. lexical (`cifar10_cat_10` before `cifar10_cat_2`); `order="natural"` sorts numbers by value.
    """
    root = Path(root).resolve()
    found, base = _detect_layout(root)
    if layout not in ("auto", found):
        raise ConvertError(f"{root}: --layout {layout} requested but the folder holds the {found} layout.")
    ext = ".aedat4" if found == "tonic" else ".aedat"
    classes = list_class_dirs(base)
    tr_files, tr_lab, va_files, va_lab = [], [], [], []
    for label, name in enumerate(classes):
        files = [str(p) for p in _class_files(base / name, (ext,), order)]
        if len(files) <= train_per_class:
            raise ConvertError(
                f"{base / name}: {len(files)} recordings, need more than --train-per-class "
                f"{train_per_class} so that val is not empty."
            )
        tr_files += files[:train_per_class]
        va_files += files[train_per_class:]
        tr_lab += [label] * train_per_class
        va_lab += [label] * (len(files) - train_per_class)
    source = {
        "type": "cifar10dvs",
        "path": str(base),
        "layout": found,
        "order": order,
        "train_per_class": train_per_class,
        "aedat4_transpose": transpose if found == "tonic" else None,
    }
    plan = Plan(source, "events", classes)
    plan.splits = {
        "train": Split(np.asarray(tr_lab, np.int64), tr_files),
        "val": Split(np.asarray(va_lab, np.int64), va_files),
    }
    return plan
