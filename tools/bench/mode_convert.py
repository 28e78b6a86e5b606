"""Mode `convert`: images/s and events/s of dassdp-convert, ffcv vs dali interleaved.

Images: the real-photo JPEG tree of the loaders mode (500x375, quality 90), source `imagenet`.
Events: (a) CIFAR10-DVS release files (AEDAT 2.0, 128x128) with random events
(tools/bench/synthetic_events.py); (b) the real AEDAT4 recording kept in the repo (tests/data/events)
copied into tonic's layout (320x240 sensor). Every call converts into a fresh folder (the tool's resume
would skip work).
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from tools.bench.harness import Bench
from tools.bench.photos import build_tree

REAL_EVENTS = Path(__file__).resolve().parents[2] / "tests" / "data" / "events" / "sample.aedat4"
FULL = {"images": 3000, "val_images": 100, "jpeg_quality": 90, "formats": ["ffcv", "dali"],
        "workers": os.cpu_count() or 1, "recordings": 40, "events_per_recording": 150_000, "T": 10,
        "real_copies": 20, "repeats": 3, "warmup": 1, "parts": ["images", "aedat2", "aedat4"]}
QUICK = {**FULL, "images": 384, "recordings": 12, "real_copies": 6, "repeats": 2, "warmup": 1}


def _case(source: str, src: Path, scratch: Path, fmt: str, count: int, **opts):
    """A case converting `src` into a new folder each call; returns `count` (images or events)."""
    from tools.convert.api import convert

    calls = itertools.count()

    def run() -> int:
        convert(source, src, scratch / f"{source}-{fmt}-{next(calls)}", fmt, progress=False, **opts)
        return count
    return run


def _aedat2_tree(root: Path, s: dict) -> Path:
    from tools.bench.synthetic_events import random_aedat2

    for c in range(2):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(s["recordings"] // 2):
            random_aedat2(root / f"c{c}" / f"rec_{i}.aedat", s["events_per_recording"], seed=100 * c + i)
    return root


def _aedat4_tree(root: Path, s: dict) -> tuple[Path, int]:
    """Copies of the real recording in tonic's layout; returns (root, total events)."""
    import tonic

    if not REAL_EVENTS.is_file():
        raise FileNotFoundError(f"{REAL_EVENTS} is missing: restore it from git (tests/data/README.md) or "
                                "leave out the part: --set parts=images,aedat2")
    n_events = len(tonic.io.read_aedat4(str(REAL_EVENTS)))
    for c in range(2):
        d = root / "CIFAR10DVS" / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(s["real_copies"] // 2):
            shutil.copyfile(REAL_EVENTS, d / f"rec_{i}.aedat4")
    return root, n_events * 2 * (s["real_copies"] // 2)


def part_cases(part: str, s: dict, cache: Path, tmp: Path) -> tuple[dict, str, str, str]:
    """(cases by name, metric, unit, label) of one part; every format converts the same source."""
    common = {"workers": s["workers"], "overwrite": True}
    scratch = tmp / part
    if part == "images":
        tree = build_tree(cache / f"photos-{s['images']}-{s['val_images']}-q{s['jpeg_quality']}",
                          s["images"], s["val_images"], quality=s["jpeg_quality"])
        n = s["images"] + s["val_images"]
        cases = {f"{f}_images": _case("imagenet", tree, scratch, f, n, **common) for f in s["formats"]}
        return cases, "convert_images_per_s", "images/s", f"500x375 JPEG q{s['jpeg_quality']}"
    if part == "aedat2":
        src = _aedat2_tree(tmp / "aedat2-src", s)
        n = (s["recordings"] // 2) * 2 * s["events_per_recording"]
        cases = {f"{f}_aedat2": _case("cifar10dvs", src, scratch, f, n, T=s["T"],
                                      train_per_class=s["recordings"] // 2 - 1, **common)
                 for f in s["formats"]}
        return cases, "convert_events_per_s", "events/s", f"AEDAT2 128x128 synthetic T={s['T']}"
    if part == "aedat4":
        src, n = _aedat4_tree(tmp / "aedat4-src", s)
        cases = {f"{f}_aedat4": _case("cifar10dvs", src, scratch, f, n, T=s["T"],
                                      train_per_class=s["real_copies"] // 2 - 1, sensor_size=(320, 240),
                                      aedat4_transpose=False, **common)
                 for f in s["formats"]}
        return cases, "convert_events_per_s", "events/s", f"AEDAT4 real recording 320x240 T={s['T']}"
    raise ValueError(f"convert: unknown part {part!r}; choose from images, aedat2, aedat4")


def run(bench: Bench, s: dict, cache: Path) -> None:
    """Time each part with every format interleaved (ratios against the first format)."""
    with tempfile.TemporaryDirectory(prefix="dassdp-bench-convert-") as tmp:
        for part in s["parts"]:
            cases, metric, unit, label = part_cases(part, s, cache, Path(tmp))
            base = next(iter(cases)) if len(cases) > 1 else None
            bench.compare(cases, metric=metric, unit=unit, warmup=s["warmup"], repeats=s["repeats"],
                          baseline=base, label=label, threads=f"{s['workers']} worker processes")
            shutil.rmtree(Path(tmp) / part, ignore_errors=True)
