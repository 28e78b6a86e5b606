"""Writers of small datasets in the real on-disk formats (sources and the converter's output layout)."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"]


def photo_crops(n: int, seed: int = 0, size=(375, 500)) -> list[np.ndarray]:
    """n real-photo crops of size (H, W) (ImageNet-like 500x375 by default), random scale/offset."""
    import skimage.data as d

    rng = np.random.default_rng(seed)
    srcs = [getattr(d, p)() for p in PHOTOS]
    out = []
    for k in range(n):
        img = Image.fromarray(srcs[k % len(srcs)])
        f = rng.uniform(1.0, 1.6) * max(size[0] / img.height, size[1] / img.width)
        img = img.resize((max(size[1], round(img.width * f)), max(size[0], round(img.height * f))),
                         Image.BILINEAR)
        y, x = rng.integers(0, img.height - size[0] + 1), rng.integers(0, img.width - size[1] + 1)
        a = np.asarray(img.crop((x, y, x + size[1], y + size[0])))
        out.append(a if rng.random() < 0.5 else a[:, ::-1].copy())
    return out


def write_folder(root: Path, counts: dict[str, int], classes: int = 3, seed: int = 0,
                 size=(375, 500)) -> Path:
    """Class-folder JPEG dataset root/<split>/c<k>/<i>.jpg (quality 90)."""
    for s, (split, n) in enumerate(counts.items()):
        for i, a in enumerate(photo_crops(n, seed + s, size)):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=90)
    return root


def _folder_items(root: Path, split: str):
    classes = sorted(p.name for p in (root / split).iterdir())
    return classes, [(f, k) for k, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]


def _manifest(out: Path, fmt: str, kind: str, classes, counts: dict, frame_shape=None):
    splits = {s: {"count": len(y), "per_class": np.bincount(y, minlength=len(classes)).tolist()}
              for s, y in counts.items()}
    m = {"tool": "dassdp-convert", "version": "fixture", "format": fmt, "kind": kind, "source": {},
         "classes": list(classes), "splits": splits, "shapes": {}, "dtypes": {}, "files": {}, "options": {},
         "skipped": []}
    if frame_shape is not None:
        m["shapes"] = {"frames": list(frame_shape)}
        m["frames"] = {"T": int(frame_shape[0]), "sensor_size": [frame_shape[3], frame_shape[2]],
                       "split_by": "number"}
    (out / "manifest.json").write_text(json.dumps(m))


def write_ffcv_images(src: Path, out: Path) -> Path:
    """FFCV layout from a class-folder tree: OUT/<split>.beton with fields image, label."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    out.mkdir(parents=True, exist_ok=True)
    labels = {}
    for split in ("train", "val"):
        classes, items = _folder_items(src, split)
        ds = [(np.asarray(Image.open(f).convert("RGB")), k) for f, k in items]
        fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=95), "label": IntField()}
        DatasetWriter(str(out / f"{split}.beton"), fields, num_workers=1).from_indexed_dataset(ds)
        labels[split] = np.array([k for _, k in items])
    _manifest(out, "ffcv", "images", classes, labels)
    return out


def write_dali_images(src: Path, out: Path, per_shard: int = 16) -> Path:
    """DALI layout: OUT/<split>/shard-%05d.tar (<key>.jpg + <key>.cls) and wds2idx v1.2 .idx files."""
    labels = {}
    for split in ("train", "val"):
        classes, items = _folder_items(src, split)
        (out / split).mkdir(parents=True, exist_ok=True)
        for s in range(0, len(items), per_shard):
            tar_path = out / split / f"shard-{s // per_shard:05d}.tar"
            lines = []
            with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tf:
                for j, (f, k) in enumerate(items[s:s + per_shard]):
                    key, comps = f"{s + j:08d}", []
                    for ext, data in (("jpg", f.read_bytes()), ("cls", str(k).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tf.addfile(info, io.BytesIO(data))
                        comps.append(f"{ext} {tf.offset - _pad(len(data))} {len(data)} {key}.{ext}")
                    lines.append(" ".join(comps))
            tar_path.with_suffix(".idx").write_text(f"v1.2 {len(lines)}\n" + "\n".join(lines) + "\n")
        labels[split] = np.array([k for _, k in items])
    _manifest(out, "dali", "images", classes, labels)
    return out


def _pad(n: int) -> int:
    return -(-n // 512) * 512


def write_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> tuple[np.ndarray, ...]:
    """CIFAR-10 python-pickle release (5 train batches + test_batch) from real photo crops."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs = np.stack(photo_crops(n_train + n_test, seed, (32, 32)))  # [N, 32, 32, 3]
    ys = rng.integers(0, 10, n_train + n_test)
    parts = np.array_split(np.arange(n_train), 5)
    for b, idx in enumerate(parts, 1):
        _pickle(d / f"data_batch_{b}", xs[idx], ys[idx])
    _pickle(d / "test_batch", xs[n_train:], ys[n_train:])
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{k}".encode() for k in range(10)], b"num_vis": 3072}, f)
    return xs, ys


def _pickle(path: Path, x: np.ndarray, y: np.ndarray):
    with open(path, "wb") as f:
        pickle.dump({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": y.tolist()}, f)


def write_dali_arrays(out: Path, kind: str, data: dict[str, tuple[np.ndarray, np.ndarray]], classes,
                      per_shard: int = 16) -> Path:
    """DALI numpy layout: images-%05d.npy uint8 [n,H,W,3] or frames-%05d.npy uint16 [n,T,2,H,W] + labels."""
    stem = "images" if kind == "images" else "frames"
    for split, (x, y) in data.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for s in range(0, len(x), per_shard):
            np.save(out / split / f"{stem}-{s // per_shard:05d}.npy", x[s:s + per_shard])
            np.save(out / split / f"labels-{s // per_shard:05d}.npy", y[s:s + per_shard].astype(np.int64))
    shape = next(iter(data.values()))[0].shape[1:] if kind == "frames" else None
    _manifest(out, "dali", kind, classes, {s: v[1] for s, v in data.items()}, shape)
    return out


def write_ffcv_frames(out: Path, data: dict[str, tuple[np.ndarray, np.ndarray]], classes) -> Path:
    """FFCV frames layout: OUT/<split>.beton with fields frames (uint16 [T,2,H,W]) and label."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    out.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in data.items():
        ds = [(x[i], int(y[i])) for i in range(len(x))]
        fields = {"frames": NDArrayField(np.dtype("uint16"), x.shape[1:]), "label": IntField()}
        DatasetWriter(str(out / f"{split}.beton"), fields, num_workers=1).from_indexed_dataset(ds)
    shape = next(iter(data.values()))[0].shape[1:]
    _manifest(out, "ffcv", "frames", classes, {s: v[1] for s, v in data.items()}, shape)
    return out


def write_fashion_mnist(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0):
    """Fashion-MNIST idx-ubyte.gz files (grey 28x28 crops of real photos, random labels)."""
    import gzip
    import struct

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    crops = photo_crops(n_train + n_test, seed, (28, 28))
    grey = [np.asarray(Image.fromarray(a).convert("L")) for a in crops]
    x, y = np.stack(grey), rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    for pre, sl in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        xs, ys = x[sl], y[sl]
        with gzip.open(root / f"{pre}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(xs), 28, 28) + xs.tobytes())
        with gzip.open(root / f"{pre}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, len(ys)) + ys.tobytes())
    return x, y
