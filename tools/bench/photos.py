"""Benchmark images: JPEGs at ImageNet-like size cut from real photos, written as a class-folder tree.

Noise decodes at a different cost from photographs, so every image is a random crop, rescale and flip of
one of the colour photos that scikit-image and scikit-learn ship (no download). One class per source photo.
The tree is cached: a second call with the same settings reuses it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 1
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle")
SIZE = (500, 375)  # width, height of a landscape image (ImageNet's typical size); portraits swap them


def source_photos() -> dict[str, np.ndarray]:
    """The real colour photos shipped with scikit-image and scikit-learn: name -> uint8 [H, W, 3]."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        photos[name] = np.ascontiguousarray(img[..., :3])
    sk = load_sample_images()
    for fname, img in zip(sk.filenames, sk.images):
        photos[Path(fname).stem] = img
    return photos


def cut(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A random crop (10-100% of the area, aspect near 4:3 or 3:4), rescaled to 500x375, maybe flipped."""
    h, w = photo.shape[:2]
    portrait = rng.random() < 0.25
    aspect = (3 / 4 if portrait else 4 / 3) * float(np.exp(rng.uniform(-0.15, 0.15)))
    area = h * w * rng.uniform(0.1, 1.0)
    cw = int(min(w, round(np.sqrt(area * aspect))))
    ch = int(min(h, round(cw / aspect)))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    size = SIZE[::-1] if portrait else SIZE
    img = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize(size, Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def build_tree(root: str | Path, n_train: int, n_val: int, *, seed: int = 0, quality: int = 90) -> Path:
    """Write root/{train,val}/<class>/<i>.jpg (cached: reused when it exists with the same settings)."""
    root = Path(root)
    settings = {"version": VERSION, "n_train": n_train, "n_val": n_val, "seed": seed, "quality": quality,
                "size": list(SIZE)}
    stamp = root / "photos.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    photos = source_photos()
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name in names:
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = names[i % len(names)]
            cut(photos[name], rng).save(tmp / split / name / f"{i:06d}.jpg", quality=quality)
    (tmp / "photos.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def default_cache() -> Path:
    """Where generated data is cached: $DASSDP_BENCH_CACHE or ~/.cache/dassdp-bench."""
    return Path(os.environ.get("DASSDP_BENCH_CACHE", Path.home() / ".cache" / "dassdp-bench"))
