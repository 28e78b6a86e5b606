"""Python entry point: scan a source and convert it (what the CLI calls)."""

from __future__ import annotations

from pathlib import Path

from .common import ConvertError
from .events import scan_cifar10dvs
from .gesture import scan_dvs128gesture
from .recordings import scan_events
from .runner import run_plan
from .sources import Plan, scan_cifar10, scan_cifar100, scan_fashion_mnist, scan_folder, scan_imagenet

# source -> (scanner, names of the scanner's own options)
SOURCES = {
    "imagenet": (scan_imagenet, ()),
    "folder": (scan_folder, ("val_fraction",)),
    "cifar10": (scan_cifar10, ()),
    "cifar100": (scan_cifar100, ("label_type",)),
    "fashion-mnist": (scan_fashion_mnist, ()),
    "cifar10dvs": (scan_cifar10dvs, ("layout", "train_per_class", "order", "transpose")),
    "dvs128gesture": (scan_dvs128gesture, ("layout",)),
    "events": (scan_events, ("train_per_class", "val_fraction", "order")),
}
SCAN_OPTIONS = ("val_fraction", "label_type", "layout", "train_per_class", "order")


def scan(source: str, src_path: str | Path | None, **scan_opts) -> Plan:
    """Scan a source folder into a Plan (classes, splits) without writing anything."""
    if source not in SOURCES:
        raise ConvertError(f"unknown source '{source}'; choose one of {sorted(SOURCES)}.")
    fn, _ = SOURCES[source]
    return fn(src_path, **scan_opts)


def convert(
    source: str,
    src_path: str | Path | None,
    out: str | Path,
    fmt: str = "ffcv",
    *,
    overwrite: bool = False,
    progress: bool = True,
    **opts,
) -> dict:
    """Convert `source` at `src_path` into folder `out` in format 'ffcv' or 'dali'; returns the manifest.

    Options: max_resolution, jpeg_quality, write_mode, compress_probability, smart_threshold, seed, T,
    sensor_size (W, H), crop, aedat4_transpose, split_by, shard_size, skip_corrupt, workers, plus the
    source's own (folder: val_fraction; cifar100: label_type; cifar10dvs: layout, train_per_class, order;
    events: train_per_class, val_fraction, order). The events source takes sensor_size from the files
    when it is not given.
    """
    if source not in SOURCES:
        raise ConvertError(f"unknown source '{source}'; choose one of {sorted(SOURCES)}.")
    own = SOURCES[source][1]
    scan_opts = {k: opts.pop(k) for k in list(opts) if k in own and opts[k] is not None}
    if source == "cifar10dvs":
        scan_opts["transpose"] = opts.get("aedat4_transpose") is not False
    if source == "events":
        if opts.get("aedat4_transpose") is not None:
            raise ConvertError("option aedat4_transpose does not apply to source 'events'.")
        scan_opts["sensor_size"] = opts.get("sensor_size")
    for k in SCAN_OPTIONS:
        if opts.get(k) is not None:
            raise ConvertError(f"option {k} does not apply to source '{source}'.")
        opts.pop(k, None)
    plan = scan(source, src_path, **scan_opts)
    if source == "events":  # the frame size the scan chose (flag or files) and tonic's AEDAT4 orientation
        opts.update(sensor_size=plan.source["sensor_size"], aedat4_transpose=False)
    return run_plan(plan, Path(out), fmt, opts, overwrite=overwrite, progress=progress)
