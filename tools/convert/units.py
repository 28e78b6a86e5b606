"""Work units run in the process pool: one unit = one shard (DALI) or one chunk (FFCV) of a split."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import numpy as np

from .common import ConvertError, atomic_write_bytes, npy_bytes, sha256_bytes
from .events import events_to_frames, load_events
from .recordings import read_recording
from .wds import build_tar

IMAGE_MODES = {"jpg": 0, "raw": 1}  # ffcv.fields.rgb_image.IMAGE_MODES


def _clean(e: Exception) -> str:
    """Error text without memory addresses (messages land in the manifest, which must be deterministic)."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(e))


def decode_image_file(path: str) -> tuple[np.ndarray, bytes, bool]:
    """Read and fully decode an image -> (RGB uint8 [H, W, 3], file bytes, is a plain RGB/grey JPEG)."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            plain_jpeg = img.format == "JPEG" and img.mode in ("RGB", "L")
            rgb = np.asarray(img.convert("RGB"))
    except OSError as e:
        raise ConvertError(
            f"{path}: corrupt or unreadable image ({_clean(e)}); replace it or pass --skip-corrupt."
        ) from None
    except Exception as e:  # PIL raises assorted errors on broken headers
        raise ConvertError(
            f"{path}: corrupt image ({type(e).__name__}: {_clean(e)}); replace it or pass --skip-corrupt."
        ) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) == 0:
        raise ConvertError(f"{path}: decoded to shape {rgb.shape}, not an RGB image.")
    return rgb, data, plain_jpeg


def resize_max(image: np.ndarray, max_res: int | None) -> np.ndarray:
    """ffcv's `resizer`: shrink so the longest side is `max_res` (cv2.INTER_AREA); never enlarge."""
    import cv2

    if not max_res:
        return image
    size = np.array([image.shape[1], image.shape[0]])
    ratio = max_res / size.max()
    if ratio < 1:
        image = cv2.resize(image, tuple((ratio * size).astype(int)), interpolation=cv2.INTER_AREA)
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """ffcv's `encode_jpeg`: RGB uint8 -> JPEG bytes (uint8 [n]) with OpenCV."""
    import cv2

    ok, out = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    )
    if not ok:
        raise ConvertError("OpenCV failed to encode a JPEG.")
    return out.reshape(-1)


def ffcv_encode(image: np.ndarray, opts: dict, split: str, index: int) -> tuple[int, int, int, np.ndarray]:
    """Exactly what RGBImageField.encode stores -> (mode, height, width, bytes); 'proportion' is seeded."""
    image = resize_max(image, opts["max_resolution"])
    mode = opts["write_mode"]
    if mode == "smart":
        mode = "jpg" if image.nbytes > opts["smart_threshold"] else "raw"
    elif mode == "proportion":
        rng = np.random.default_rng([opts["seed"], int(split == "val"), index])
        mode = "jpg" if rng.random() < opts["compress_probability"] else "raw"
    if mode == "jpg":
        data = encode_jpeg(image, opts["jpeg_quality"])
    else:
        data = np.ascontiguousarray(image).reshape(-1)
    return IMAGE_MODES[mode], image.shape[0], image.shape[1], data


def _images_of(spec: dict):
    """Yield (global index, label, RGB image or None, file bytes, plain_jpeg, source id, error) per sample."""
    start = spec["start"]
    if spec.get("images") is not None:
        for j, (img, lab) in enumerate(zip(spec["images"], spec["labels"])):
            yield start + j, int(lab), img, None, False, f"{spec['split']}[{start + j}]", None
        return
    for j, (path, lab) in enumerate(zip(spec["files"], spec["labels"])):
        try:
            img, data, plain = decode_image_file(path)
            yield start + j, int(lab), img, data, plain, path, None
        except ConvertError as e:
            yield start + j, int(lab), None, None, False, path, e


def _collect(spec: dict, skipped: list, make):
    """Run `make` per decodable sample; corrupt ones raise unless --skip-corrupt. Each stored image's longest
    side (px, after --max-resolution) goes into spec["sides"] for the manifest."""
    out, labels = [], []
    max_res = spec["opts"]["max_resolution"]
    for index, label, img, data, plain, src, err in _images_of(spec):
        if err is not None:
            if not spec["opts"]["skip_corrupt"]:
                raise err
            skipped.append({"file": src, "problem": str(err)})
            continue
        out.append(make(index, img, data, plain))
        labels.append(label)
        side = max(img.shape[:2])
        spec["sides"].append(min(side, max_res) if max_res else side)
    return out, labels


def _unit_images(spec: dict, skipped: list) -> tuple[dict[str, bytes], list[int]]:
    opts, fmt, name = spec["opts"], spec["fmt"], spec["name"]
    if fmt == "ffcv":
        enc, labels = _collect(spec, skipped, lambda i, img, d, p: ffcv_encode(img, opts, spec["split"], i))
        blob = np.concatenate([e[3] for e in enc]) if enc else np.zeros(0, np.uint8)
        sizes = np.array([len(e[3]) for e in enc], np.int64)
        arrays = {
            "mode": np.array([e[0] for e in enc], np.uint8),
            "height": np.array([e[1] for e in enc], np.int64),
            "width": np.array([e[2] for e in enc], np.int64),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "data": blob,
            "labels": np.array(labels, np.int64),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return {f"chunk-{name}.npz": buf.getvalue()}, labels
    if spec.get("images") is not None:  # tiny images -> npy arrays
        imgs, labels = _collect(spec, skipped, lambda i, img, d, p: img)
        arr = np.stack(imgs) if imgs else np.zeros((0, *spec["images"].shape[1:]), np.uint8)  # [n, H, W, 3]
        return {
            f"images-{name}.npy": npy_bytes(arr),
            f"labels-{name}.npy": npy_bytes(np.array(labels, np.int64)),
        }, labels

    def jpeg_of(i, img, data, plain):
        if plain and not opts["max_resolution"]:
            return f"{i:08d}", data
        return f"{i:08d}", encode_jpeg(
            resize_max(img, opts["max_resolution"]), opts["jpeg_quality"]
        ).tobytes()

    jpegs, labels = _collect(spec, skipped, jpeg_of)
    if not jpegs:
        return {}, labels
    tar, index = build_tar((k, d, lab) for (k, d), lab in zip(jpegs, labels))
    return {f"shard-{name}.tar": tar, f"shard-{name}.idx": index.encode()}, labels


def _unit_frames(spec: dict, skipped: list) -> tuple[dict[str, bytes], list[int], int]:
    opts, frames, labels = spec["opts"], [], []
    for path, lab in zip(spec["files"], spec["labels"]):
        try:
            if spec.get("reader") == "events":
                ev = read_recording(path)
            else:
                ev = load_events(path, opts["aedat4_transpose"])
            size = tuple(opts["sensor_size"])
            frames.append(
                events_to_frames(ev, opts["T"], size, split_by=opts["split_by"], crop=opts["crop"], path=path)
            )
            labels.append(int(lab))
        except ConvertError as e:
            if not opts["skip_corrupt"]:
                raise
            skipped.append({"file": path, "problem": str(e)})
    W, H = opts["sensor_size"]
    arr = np.stack(frames) if frames else np.zeros((0, opts["T"], 2, H, W), np.uint16)  # [n, T, 2, H, W]
    max_count = int(arr.max(initial=0))
    lab = np.array(labels, np.int64)
    if spec["fmt"] == "ffcv":
        buf = io.BytesIO()
        np.savez(buf, frames=arr, labels=lab)
        return {f"chunk-{spec['name']}.npz": buf.getvalue()}, labels, max_count
    return (
        {f"frames-{spec['name']}.npy": npy_bytes(arr), f"labels-{spec['name']}.npy": npy_bytes(lab)},
        labels,
        max_count,
    )


def run_unit(spec: dict) -> dict:
    """Convert one unit into `spec['work_dir']` atomically; returns its record (files, labels, skips)."""
    delay = float(os.environ.get("DASSDP_CONVERT_TEST_DELAY_S", "0"))  # testing aid: widen the kill window
    if delay:
        time.sleep(delay)
    skipped: list = []
    max_count = None
    spec = {**spec, "sides": []}
    if spec["kind"] == "frames":
        files, labels, max_count = _unit_frames(spec, skipped)
    else:
        files, labels = _unit_images(spec, skipped)
    work = Path(spec["work_dir"])
    record_files = {}
    for fname, data in files.items():
        atomic_write_bytes(work / fname, data)
        record_files[fname] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    return {
        "inputs": spec["inputs"],
        "split": spec["split"],
        "name": spec["name"],
        "files": record_files,
        "labels": labels,
        "skipped": skipped,
        "max_count": max_count,
        "sides": spec["sides"],  # images: longest side of each stored image (px)
    }
