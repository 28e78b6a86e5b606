"""The `events` source: a class-folder tree of recordings in a format tonic reads, one reader per format.

Formats (one per tree, chosen by the file extension):
    .aedat4  AEDAT 4.0 (tonic.io.read_aedat4); the sensor size is in the file's event-stream header
    .aedat   AEDAT 2.0 of a DVS128 (7-bit addresses: 128x128), decoded as DV/libcaer does, so a recording
             reads the same as its AEDAT4 copy (the cifar10dvs source keeps spikingjelly's CIFAR10-DVS
             decoding)
    .bin     N-MNIST / N-Caltech101 binary, 5 bytes per event (tonic.io.read_mnist_file); no sensor size
    .npy     tonic's structured event array with fields t, x, y, p; no sensor size
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .common import ConvertError, list_class_dirs
from .events import read_aedat4
from .sources import Plan, Split, _class_files

FORMATS = {".aedat4": "AEDAT4", ".aedat": "AEDAT 2.0", ".bin": "N-MNIST binary", ".npy": "tonic .npy"}
DVS128 = (128, 128)  # (W, H) of the AEDAT 2.0 address layout


def read_aedat2_dvs128(path: Path) -> dict[str, np.ndarray]:
    """AEDAT 2.0 file of a DVS128 -> events, oriented as DV/libcaer decodes it (x, y flipped, ON = 1)."""
    from .events import aedat2_words

    addr, t = (w.astype(np.int64) for w in aedat2_words(path, "re-record or re-copy it"))
    return {"t": t, "x": 127 - ((addr >> 1) & 0x7F), "y": 127 - ((addr >> 8) & 0x7F), "p": 1 - (addr & 1)}


def read_nmnist(path: Path) -> dict[str, np.ndarray]:
    """N-MNIST binary (40 bits per event, timestamp overflow markers) -> events, via tonic's reader."""
    import tonic

    size = Path(path).stat().st_size
    if size % 5:
        raise ConvertError(
            f"{path}: truncated N-MNIST file ({size} bytes is not a multiple of 5 = one "
            "event); re-copy it or pass --skip-corrupt."
        )
    ev = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    return {k: ev[k].astype(np.int64) for k in "txyp"}


def read_npy(path: Path) -> dict[str, np.ndarray]:
    """tonic's structured array (fields t, x, y, p; integer t) -> events; p > 0 is ON."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ConvertError(f"{path}: unreadable .npy ({e}); re-save it with numpy.save.") from None
    names = arr.dtype.names or ()
    if arr.ndim != 1 or not set("txyp") <= set(names):
        raise ConvertError(
            f"{path}: expected tonic's 1-d structured array with fields t, x, y, p, got dtype "
            f"{arr.dtype} and shape {arr.shape}."
        )
    if not all(np.issubdtype(arr.dtype[k], np.integer) or arr.dtype[k].kind == "b" for k in "txyp"):
        raise ConvertError(f"{path}: fields t, x, y, p must be integers (t in microseconds): {arr.dtype}.")
    out = {k: arr[k].astype(np.int64) for k in "txy"}
    out["p"] = (arr["p"] > 0).astype(np.int64)
    return out


def read_recording(path: str) -> dict[str, np.ndarray]:
    """One recording of the `events` source, read by its extension -> events t, x, y, p (int64)."""
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext == ".aedat4":
            return read_aedat4(p, transpose=False)
        if ext == ".aedat":
            return read_aedat2_dvs128(p)
        if ext == ".bin":
            return read_nmnist(p)
        if ext == ".npy":
            return read_npy(p)
    except OSError as e:
        raise ConvertError(f"{path}: cannot read ({e}).") from None
    raise ConvertError(f"{path}: unknown recording format; use one of {sorted(FORMATS)}.")


def sensor_size_of(path: Path) -> tuple[int, int] | None:
    """(W, H) that the file itself records, or None when its format does not carry it."""
    ext = path.suffix.lower()
    if ext == ".aedat":
        return DVS128
    if ext != ".aedat4":
        return None
    import aedat

    try:
        streams = aedat.Decoder(str(path)).id_to_stream()
    except BaseException as e:  # the Rust reader may raise pyo3's PanicException (a BaseException)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise ConvertError(f"{path}: unreadable AEDAT4 header ({type(e).__name__}: {e}).") from None
    events = [s for _, s in sorted(streams.items()) if s.get("type") == "events"]
    if not events or "width" not in events[0]:
        raise ConvertError(f"{path}: no event stream with a sensor size in the AEDAT4 header.")
    return int(events[0]["width"]), int(events[0]["height"])


def _tree_files(base: Path, order: str) -> tuple[list[str], list[list[Path]]]:
    classes = list_class_dirs(base)
    if not classes:
        raise ConvertError(f"{base}: no class folders; expected <class>/<recording> files.")
    return classes, [_class_files(base / c, tuple(FORMATS), order) for c in classes]


def _one_format(groups: list[list[Path]], root: Path) -> str:
    exts = sorted({p.suffix.lower() for g in groups for p in g})
    if len(exts) > 1:
        raise ConvertError(f"{root}: recordings in several formats {exts}; convert one format per tree.")
    return exts[0]


def _sensor_size(groups: list[list[Path]], flag, root: Path) -> tuple[list[int], str]:
    """The frame size: the --sensor-size flag, else the one size every file records."""
    if flag is not None:
        return [int(v) for v in flag], "flag"
    sizes = {}
    for p in (p for g in groups for p in g):
        size = sensor_size_of(p)
        if size is None:
            raise ConvertError(
                f"{root}: {p.suffix} recordings do not record the sensor size; pass "
                "--sensor-size WxH (N-MNIST: 34x34)."
            )
        sizes.setdefault(size, p)
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise ConvertError(
            f"{root}: {pa} has a {a[0]}x{a[1]} sensor but {pb} has {b[0]}x{b[1]}; pass "
            "--sensor-size WxH to put all on one frame size (with --crop if needed)."
        )
    return list(next(iter(sizes))), "files"


def _split_rule(presplit: bool, train_per_class: int | None, val_fraction: float | None, root: Path) -> dict:
    """Check the split options -> how the split is made, as the manifest records it."""
    if presplit and (train_per_class is not None or val_fraction is not None):
        raise ConvertError(f"{root}: holds train/ and val/ already; drop --train-per-class/--val-fraction.")
    if train_per_class is not None and val_fraction is not None:
        raise ConvertError("--train-per-class and --val-fraction both given; choose one way to split.")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ConvertError(f"--val-fraction {val_fraction}: must be in (0, 1).")
    if presplit:
        return {"split": "folders"}
    if train_per_class is not None:
        return {"train_per_class": train_per_class}
    return {"val_fraction": 0.1 if val_fraction is None else val_fraction}


def _n_train(n: int, rule: dict, where: Path) -> int:
    """Training recordings of a class of n: the first N, or all but the last ceil(n * fraction)."""
    n_train = rule.get("train_per_class", n - int(math.ceil(n * rule.get("val_fraction", 0.0))))
    if not 0 < n_train < n:
        raise ConvertError(
            f"{where}: {n} recordings, {n_train} for train leaves one split empty; change "
            "--train-per-class or --val-fraction."
        )
    return n_train


def scan_events(
    root: Path,
    sensor_size=None,
    train_per_class: int | None = None,
    val_fraction: float | None = None,
    order: str = "lexical",
) -> Plan:
    """A class-folder tree of recordings -> plan; `train/` + `val/` sub-trees are used as they are."""
    root = Path(root).resolve()
    presplit = (root / "train").is_dir() and (root / "val").is_dir()
    rule = _split_rule(presplit, train_per_class, val_fraction, root)
    if presplit:
        classes, train = _tree_files(root / "train", order)
        val_classes, val = _tree_files(root / "val", order)
        if val_classes != classes:
            raise ConvertError(f"{root}: train/ and val/ hold different class folders; make them the same.")
    else:
        classes, groups = _tree_files(root, order)
        ks = [_n_train(len(g), rule, root / c) for c, g in zip(classes, groups)]
        train, val = [g[:k] for g, k in zip(groups, ks)], [g[k:] for g, k in zip(groups, ks)]
    ext = _one_format(train + val, root)
    size, size_from = _sensor_size(train + val, sensor_size, root)
    source = {"type": "events", "path": str(root), "format": ext, "order": order, "sensor_size": size,
              "sensor_size_from": size_from, **rule}
    plan = Plan(source, "events", classes, reader="events")
    for split, per_class in (("train", train), ("val", val)):
        labels = [label for label, fs in enumerate(per_class) for _ in fs]
        plan.splits[split] = Split(np.asarray(labels, np.int64), [str(f) for fs in per_class for f in fs])
    return plan
