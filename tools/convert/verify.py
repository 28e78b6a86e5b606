"""Read a converted folder back and check it against its manifest (`dassdp-convert verify OUT`)."""

from __future__ import annotations

import io
import json
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


def _iter_beton(path: Path, kind: str) -> Iterator[tuple[np.ndarray, int]]:
    import cv2
    from ffcv.reader import Reader

    with warnings.catch_warnings():  # ffcv warns that torch lacks uint16 when it sees the frames field
        warnings.simplefilter("ignore")
        r = Reader(str(path))
    data = np.memmap(path, np.uint8, mode="r")
    sizes = dict(zip(r.alloc_table["ptr"].tolist(), r.alloc_table["size"].tolist()))
    col = {name: r.metadata[f"f{i}"] for i, name in enumerate(r.field_names)}  # ffcv names columns f0, f1, ..
    for i in range(int(r.num_samples)):
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


def read_samples(out: Path, split: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (image RGB uint8 [H, W, 3] or frames uint16 [T, 2, H, W], label) of a split in stored order."""
    out = Path(out)
    man = load_manifest(out)
    if split not in man["splits"]:
        raise ConvertError(f"{out}: no split '{split}' (have {sorted(man['splits'])}).")
    for shard in man["splits"][split]["shards"]:
        f = out / shard["file"]
        if man["format"] == "ffcv":
            yield from _iter_beton(f, man["kind"])
        elif f.suffix == ".tar":
            for _, jpeg, label in iter_shard(f, f.with_suffix(".idx")):
                yield _decode_jpeg(jpeg), label
        else:
            arr = np.load(f, mmap_mode="r")
            labels = np.load(f.with_name(f.name.replace("images-", "labels-").replace("frames-", "labels-")))
            for a, lab in zip(arr, labels):
                yield np.asarray(a), int(lab)


def _check_sample(man: dict, split: str, i: int, x: np.ndarray) -> None:
    if man["kind"] == "frames":
        want, dt = man["shapes"]["frames"], man["dtypes"]["frames"]
    else:
        want, dt = man["shapes"]["image"], man["dtypes"]["image"]
        if want == "variable":
            want = [x.shape[0], x.shape[1], 3]
    if list(x.shape) != list(want) or x.dtype != np.dtype(dt):
        raise ConvertError(f"{split} sample {i}: shape {x.shape} dtype {x.dtype}, manifest says {want} {dt}.")


def verify(out: Path, progress: bool = False) -> dict:
    """Check every file's checksum, then re-read every sample: counts, per-class counts, labels, shapes."""
    from tqdm import tqdm

    out = Path(out)
    man = load_manifest(out)
    for rel, meta in man["files"].items():
        p = out / rel
        if not p.exists():
            raise ConvertError(f"{p}: listed in the manifest but missing.")
        if p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            raise ConvertError(f"{p}: checksum differs from the manifest; the file is damaged, reconvert.")
    report = {"files": len(man["files"])}
    for split, info in man["splits"].items():
        labels = []
        bar = tqdm(total=info["count"], desc=f"verify {split}", unit="sample", disable=not progress)
        for i, (x, lab) in enumerate(read_samples(out, split)):
            _check_sample(man, split, i, x)
            labels.append(lab)
            bar.update()
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
