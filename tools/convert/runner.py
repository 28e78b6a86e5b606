"""Orchestration: plan -> work units in a process pool (resumable) -> final files -> manifest.json."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .common import VERSION, WORK, ConvertError, atomic_write_json, file_fingerprint, hash_obj, sha256_bytes
from .sources import Plan
from .units import run_unit

# samples per unit; FFCV chunks of JPEG sources are smaller because they hold decoded/resized pixels
DEFAULT_SHARD = {"files": 1000, "array": 10000, "events": 256, "ffcv-files": 256}
# options that change output bytes (the resume hash and the manifest record them)
BYTE_OPTIONS = (
    "max_resolution",
    "jpeg_quality",
    "write_mode",
    "compress_probability",
    "smart_threshold",
    "seed",
    "T",
    "sensor_size",
    "crop",
    "aedat4_transpose",
    "split_by",
    "shard_size",
)


def resolve_options(plan: Plan, fmt: str, opts: dict) -> dict:
    """Fill defaults and validate the options for this plan and format."""
    if fmt not in ("ffcv", "dali"):
        raise ConvertError(f"--format {fmt}: use 'ffcv' or 'dali'.")
    o = {
        "max_resolution": None,
        "jpeg_quality": 90,
        "write_mode": None,
        "compress_probability": 0.5,
        "smart_threshold": 256 * 256 * 3,
        "seed": 0,
        "T": 10,
        "sensor_size": (128, 128),
        "crop": False,
        "aedat4_transpose": True,
        "split_by": "number",
        "shard_size": None,
        "skip_corrupt": False,
        "workers": None,
    }
    unknown = set(opts) - set(o)
    if unknown:
        raise ConvertError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(o)}.")
    o.update({k: v for k, v in opts.items() if v is not None})
    o["write_mode"] = o["write_mode"] or ("smart" if plan.input_kind == "files" else "raw")
    key = "ffcv-files" if fmt == "ffcv" and plan.input_kind == "files" else plan.input_kind
    o["shard_size"] = o["shard_size"] or DEFAULT_SHARD[key]
    if o["write_mode"] not in ("raw", "jpg", "smart", "proportion"):
        raise ConvertError(f"--write-mode {o['write_mode']}: use raw, jpg, smart or proportion.")
    if not 1 <= int(o["jpeg_quality"]) <= 100:
        raise ConvertError(f"--jpeg-quality {o['jpeg_quality']}: must be in 1..100.")
    if not 0.0 <= float(o["compress_probability"]) <= 1.0:
        raise ConvertError(f"--compress-probability {o['compress_probability']}: must be in [0, 1].")
    if int(o["shard_size"]) < 1 or int(o["T"]) < 1:
        raise ConvertError("--shard-size and --T must be >= 1.")
    if o["split_by"] not in ("number", "time"):
        raise ConvertError(f"--split-by {o['split_by']}: use 'number' or 'time'.")
    o["sensor_size"] = [int(v) for v in o["sensor_size"]]
    return o


def _units(plan: Plan, fmt: str, opts: dict, work: Path) -> list[dict]:
    byte_opts = {k: opts[k] for k in BYTE_OPTIONS}
    specs = []
    size = opts["shard_size"]
    for split, sp in plan.splits.items():
        for u, start in enumerate(range(0, len(sp), size)):
            sl = slice(start, start + size)
            spec = {
                "fmt": fmt,
                "kind": plan.kind,
                "reader": plan.reader,
                "split": split,
                "name": f"{u:05d}",
                "start": start,
                "labels": sp.labels[sl],
                "opts": opts,
                "work_dir": str(work / split),
            }
            if sp.images is not None:
                spec["images"] = sp.images[sl]
                ident = [sha256_bytes(spec["images"].tobytes())]
            else:
                spec["files"] = sp.files[sl]
                ident = [file_fingerprint(Path(f)) for f in spec["files"]]
            spec["inputs"] = hash_obj(
                [VERSION, fmt, plan.kind, plan.reader, split, start, byte_opts, ident,
                 spec["labels"].tolist()]
            )
            specs.append(spec)
    return specs


def _record_path(work: Path, spec: dict) -> Path:
    return work / spec["split"] / f"unit-{spec['name']}.json"


def _load_done(work: Path, out: Path, spec: dict, fmt: str) -> dict | None:
    """The unit's record if it finished earlier with the same inputs and its files are still there."""
    rp = _record_path(work, spec)
    try:
        rec = json.loads(rp.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("inputs") != spec["inputs"]:
        return None
    for fname, meta in rec["files"].items():
        w = work / spec["split"] / fname
        if w.exists() and w.stat().st_size == meta["bytes"]:
            continue
        final = out / spec["split"] / fname  # moved during an interrupted final step
        if fmt == "dali" and final.exists() and _sha(final) == meta["sha256"]:
            continue
        return None
    return rec


def _sha(path: Path) -> str:
    from .common import sha256_file

    return sha256_file(path)


def _clean_tmp(folder: Path) -> None:
    if folder.exists():
        for p in folder.rglob("*.tmp-*"):
            p.unlink(missing_ok=True)


def _run_units(
    specs: list[dict], work: Path, out: Path, fmt: str, workers: int, progress: bool
) -> list[dict]:
    records: dict[int, dict] = {}
    todo = []
    for i, spec in enumerate(specs):
        rec = _load_done(work, out, spec, fmt)
        if rec is not None:
            records[i] = rec
        else:
            todo.append(i)
    if records:
        print(
            f"dassdp-convert: resuming: {len(records)} of {len(specs)} units already done in {work}",
            file=sys.stderr,
        )
    total = sum(len(s["labels"]) for s in specs)
    done = sum(len(specs[i]["labels"]) for i in records)
    bar = tqdm(total=total, initial=done, unit="sample", desc="convert", disable=not progress, smoothing=0.1)
    error: BaseException | None = None
    if todo:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {pool.submit(run_unit, specs[i]): i for i in todo}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)  # record each unit as it ends
                for fut in finished:
                    if fut.cancelled():
                        continue
                    if fut.exception() is not None:
                        if error is None:  # stop: cancel what has not started, let running units finish
                            error = fut.exception()
                            for p in pending:
                                p.cancel()
                        continue
                    i = futures[fut]
                    rec = fut.result()
                    atomic_write_json(_record_path(work, specs[i]), rec)  # after its files: unit done
                    records[i] = rec
                    bar.update(len(specs[i]["labels"]))
    if error is not None:
        bar.close()
        raise error
    bar.close()
    return [records[i] for i in range(len(specs))]


def _split_summary(plan: Plan, recs: list[dict], shards: list[dict]) -> dict:
    labels = np.array([lab for r in recs for lab in r["labels"]], np.int64)
    per_class = np.bincount(labels, minlength=len(plan.classes)).tolist()
    return {
        "count": int(len(labels)),
        "per_class": per_class,
        "labels_sha256": sha256_bytes(labels.astype("<i8").tobytes()),
        "shards": shards,
    }


def _finalize_dali(plan: Plan, specs, records, work: Path, out: Path) -> tuple[dict, dict]:
    files, splits = {}, {}
    for split in plan.splits:
        recs = [r for s, r in zip(specs, records) if s["split"] == split]
        shards = []
        for rec in recs:
            for fname, meta in sorted(rec["files"].items()):
                src, dst = work / split / fname, out / split / fname
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.exists():
                    os.replace(src, dst)
                files[f"{split}/{fname}"] = meta
            data_files = [
                f for f in sorted(rec["files"]) if not f.startswith("labels-") and not f.endswith(".idx")
            ]
            shards += [{"file": f"{split}/{f}", "count": len(rec["labels"])} for f in data_files]
        splits[split] = _split_summary(plan, recs, shards)
    return files, splits


def _finalize_ffcv(plan: Plan, specs, records, work: Path, out: Path, opts: dict, progress: bool):
    from .ffcv_out import write_beton

    files, splits = {}, {}
    for split in plan.splits:
        recs = [r for s, r in zip(specs, records) if s["split"] == split]
        chunks = [work / split / f for r in recs for f in sorted(r["files"])]
        dst = out / f"{split}.beton"
        meta = write_beton(chunks, plan.kind, dst, work / f"{split}.beton", opts, progress)
        files[f"{split}.beton"] = meta
        splits[split] = _split_summary(
            plan, recs, [{"file": f"{split}.beton", "count": sum(len(r["labels"]) for r in recs)}]
        )
    return files, splits


def _prepare_out(out: Path, overwrite: bool) -> None:
    man = out / "manifest.json"
    if man.exists():
        if not overwrite:
            raise ConvertError(
                f"{out}: already holds a finished conversion (manifest.json); pass --overwrite "
                "or choose another output folder."
            )
        for rel in json.loads(man.read_text()).get("files", {}):
            (out / rel).unlink(missing_ok=True)
        man.unlink()
    out.mkdir(parents=True, exist_ok=True)


def run_plan(
    plan: Plan, out: Path, fmt: str, opts: dict, *, overwrite: bool = False, progress: bool = True
) -> dict:
    """Convert a scanned plan into `out` in format `fmt`; returns the manifest."""
    out = Path(out).resolve()
    opts = resolve_options(plan, fmt, opts)
    _prepare_out(out, overwrite)
    work = out / WORK
    _clean_tmp(work)
    specs = _units(plan, fmt, opts, work)
    workers = int(opts["workers"] or os.cpu_count() or 1)
    try:
        records = _run_units(specs, work, out, fmt, workers, progress)
        if fmt == "dali":
            files, splits = _finalize_dali(plan, specs, records, work, out)
        else:
            files, splits = _finalize_ffcv(plan, specs, records, work, out, opts, progress)
        manifest = _manifest(plan, fmt, opts, files, splits, records)
        atomic_write_json(out / "manifest.json", manifest)
    except OSError as e:  # disk full, quota, read-only: one line; finished units stay for the rerun
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise
        raise ConvertError(f"{e.filename or out}: cannot write ({e.strerror}); free space in {out.parent} "
                           "and rerun the same command: finished units are kept.") from None
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _manifest(plan: Plan, fmt: str, opts: dict, files: dict, splits: dict, records: list[dict]) -> dict:
    first = next((sp for sp in plan.splits.values() if len(sp)), None)
    if plan.kind == "frames":
        W, H = opts["sensor_size"]
        shapes, dtypes = {"frames": [opts["T"], 2, H, W]}, {"frames": "uint16", "label": "int64"}
    else:
        fixed = first is not None and first.images is not None and not opts["max_resolution"]
        shapes = {"image": list(first.images.shape[1:]) if fixed else "variable"}
        dtypes = {"image": "uint8", "label": "int64"}
    m = {
        "tool": "dassdp-convert",
        "version": VERSION,
        "format": fmt,
        "kind": plan.kind,
        "source": plan.source,
        "classes": plan.classes,
        "splits": splits,
        "shapes": shapes,
        "dtypes": dtypes,
        "files": files,
        "options": {k: opts[k] for k in BYTE_OPTIONS + ("skip_corrupt",)},
        "skipped": [s for r in records for s in r["skipped"]],
    }
    sides = [v for r in records for v in r.get("sides") or []]
    if plan.kind != "frames" and sides:  # the trainer's default recipe for `folder` data follows it
        m["image_sides"] = {"max": int(max(sides)), "median": int(np.median(sides))}
    if plan.kind == "frames":
        m["frames"] = {
            "T": opts["T"],
            "sensor_size": opts["sensor_size"],
            "split_by": opts["split_by"],
            "max_count": max([r["max_count"] or 0 for r in records] + [0]),
        }
    return m
