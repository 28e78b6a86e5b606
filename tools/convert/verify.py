"""Read a converted folder back and check it against its manifest (`dassdp-convert verify OUT`)."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .common import ConvertError, sha256_bytes, sha256_file
from .wds import iter_shard


def load_manifest(out: Path) -> dict:
    """The manifest of a finished output folder (error if the run never finished)."""
    path = Path(out) / "manifest.json"
    if not path.exists():
        raise ConvertError(
            f"{out}: no manifest.json, so this is not a finished conversion; rerun dassdp-convert."
        )
    return json.loads(path.read_text())


def _decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))  # [H, W, 3]


def _iter_beton(path: Path, kind: str, start: int = 0, stop: int | None = None):
    """Yield (sample, label) of a .beton for sample indices [start, stop)."""
    import cv2
    from ffcv.reader import Reader

    with warnings.catch_warnings():  # ffcv warns that torch lacks uint16 when it sees the frames field
        warnings.simplefilter("ignore")
        r = Reader(str(path))
    data = np.memmap(path, np.uint8, mode="r")
    sizes = dict(zip(r.alloc_table["ptr"].tolist(), r.alloc_table["size"].tolist()))
    col = {name: r.metadata[f"f{i}"] for i, name in enumerate(r.field_names)}  # ffcv names columns f0, f1, ..
    for i in range(start, int(r.num_samples) if stop is None else stop):
        label = int(col["label"][i])
        if kind == "frames":
            h = r.handlers["frames"]
            ptr = int(col["frames"][i])
            yield np.frombuffer(data[ptr : ptr + h.element_size], h.dtype).reshape(h.shape), label
            continue
        m = col["image"][i]
        ptr = int(m["data_ptr"])
        raw = np.asarray(data[ptr : ptr + sizes[ptr]])
        if m["mode"] == 0:  # jpg
            img = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        else:
            img = raw[: int(m["height"]) * int(m["width"]) * 3].reshape(int(m["height"]), int(m["width"]), 3)
        yield img, label


def _iter_part(out: Path, fmt: str, kind: str, rel: str, start: int = 0, stop: int | None = None):
    """Yield (sample, label) of one shard file (a range of it for .beton files)."""
    f = out / rel
    if fmt == "ffcv":
        yield from _iter_beton(f, kind, start, stop)
    elif f.suffix == ".tar":
        for _, jpeg, label in iter_shard(f, f.with_suffix(".idx")):
            yield _decode_jpeg(jpeg), label
    else:
        arr = np.load(f, mmap_mode="r")
        labels = np.load(f.with_name(f.name.replace("images-", "labels-").replace("frames-", "labels-")))
        for a, lab in zip(arr, labels):
            yield np.asarray(a), int(lab)


def read_samples(out: Path, split: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (image RGB uint8 [H, W, 3] or frames uint16 [T, 2, H, W], label) of a split in stored order."""
    out = Path(out)
    man = load_manifest(out)
    if split not in man["splits"]:
        raise ConvertError(f"{out}: no split '{split}' (have {sorted(man['splits'])}).")
    for shard in man["splits"][split]["shards"]:
        yield from _iter_part(out, man["format"], man["kind"], shard["file"])


def _expected(man: dict) -> tuple[list | str, str]:
    key = "frames" if man["kind"] == "frames" else "image"
    return man["shapes"][key], man["dtypes"][key]


def _check_part(task: tuple) -> list[int]:
    """Decode every sample of one part and check shape/dtype; returns its labels (runs in the pool)."""
    out, man, split, rel, start, stop = task
    want, dt = _expected(man)
    labels = []
    for i, (x, lab) in enumerate(_iter_part(out, man["format"], man["kind"], rel, start, stop)):
        shape = [x.shape[0], x.shape[1], 3] if want == "variable" else want
        if list(x.shape) != list(shape) or x.dtype != np.dtype(dt):
            raise ConvertError(
                f"{out / rel}: sample {start + i} has shape {x.shape} dtype {x.dtype}, "
                f"manifest says {want} {dt}."
            )
        labels.append(lab)
    return labels


def _check_file(task: tuple) -> None:
    path, meta = task
    if not path.exists():
        raise ConvertError(f"{path}: listed in the manifest but missing.")
    if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
        raise ConvertError(f"{path}: checksum differs from the manifest; the file is damaged, reconvert.")


def _parts(out: Path, man: dict, split: str, part_size: int = 5000) -> list[tuple]:
    tasks = []
    for shard in man["splits"][split]["shards"]:
        if man["format"] == "ffcv":  # one file per split: verify it in ranges
            n = shard["count"]
            tasks += [
                (out, man, split, shard["file"], a, min(a + part_size, n)) for a in range(0, n, part_size)
            ]
        else:
            tasks.append((out, man, split, shard["file"], 0, None))
    return tasks


def verify(out: Path, progress: bool = False, workers: int | None = None) -> dict:
    """Check every file's checksum, then re-read every sample: counts, per-class counts, labels, shapes."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    out = Path(out).resolve()
    man = load_manifest(out)
    report = {"files": len(man["files"])}
    if man["format"] == "ffcv":
        import ffcv.reader  # noqa: F401  (import once here; forked workers inherit it)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(_check_file, [(out / rel, meta) for rel, meta in man["files"].items()]))
        for split, info in man["splits"].items():
            tasks = _parts(out, man, split)
            bar = tqdm(total=info["count"], desc=f"verify {split}", unit="sample", disable=not progress)
            labels = []
            for part in pool.map(_check_part, tasks):  # results come back in task order
                labels += part
                bar.update(len(part))
            bar.close()
            lab = np.array(labels, np.int64)
            if len(lab) != info["count"]:
                raise ConvertError(
                    f"{out}: split {split} holds {len(lab)} samples, manifest says {info['count']}."
                )
            per_class = np.bincount(lab, minlength=len(man["classes"])).tolist()
            if (
                per_class != info["per_class"]
                or sha256_bytes(lab.astype("<i8").tobytes()) != info["labels_sha256"]
            ):
                raise ConvertError(f"{out}: labels of split {split} differ from the manifest.")
            report[split] = len(lab)
    return report
