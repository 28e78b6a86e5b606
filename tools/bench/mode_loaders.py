"""Mode `loaders`: training images/s per loader backend on the same JPEGs, torchvision as the baseline.

Every case produces the same batches: 224 px RandomResizedCrop (bicubic) + horizontal flip + normalise,
float32, batch 64, from the same real-photo JPEG tree (tools.bench.photos). ffcv and dali read that tree
after `dassdp-convert imagenet` turned it into their layouts. One unit of work = one training epoch.

Case `decode` is the JPEG decode limit: every training file read and decoded at full size to RGB with
libjpeg-turbo (through Pillow, or simplejpeg when installed), no resize, no augmentation, no batching, on
`workers` threads (both decoders release the GIL). Each loader is reported as a fraction of it, per
interleaved round. ffcv and DALI decode with libjpeg-turbo too; DALI may decode only the crop's region, so
its fraction can exceed 1.
"""
from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tools.bench.harness import Bench
from tools.bench.photos import build_tree

FULL = {"images": 3000, "val_images": 100, "batch_size": 64, "workers": 2, "size": 224, "repeats": 5,
        "warmup": 1, "cases": ["torchvision", "ffcv", "dali", "decode"], "jpeg_quality": 90, "profile": True,
        "window_samples": 160145}  # one rank's share of ImageNet-1k's training set on 8 ranks
QUICK = {**FULL, "images": 768, "repeats": 3}


def torchvision_loader(tree: Path, s: dict):
    """The out-of-the-box baseline: ImageFolder + timm's training transform + torch DataLoader."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    tf = create_transform(s["size"], is_training=True, color_jitter=None, interpolation="bicubic")
    ds = ImageFolder(str(tree / "train"), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=s["batch_size"], shuffle=True, drop_last=True,
                                       num_workers=s["workers"], persistent_workers=s["workers"] > 0,
                                       pin_memory=s["device"].startswith("cuda"))


def converted(tree: Path, fmt: str) -> Path:
    """The tree converted by dassdp-convert (source `imagenet`: train/ and val/ class folders), cached."""
    from tools.convert.api import convert

    out = tree.with_name(f"{tree.name}-{fmt}")
    if not (out / "manifest.json").is_file():
        convert("imagenet", tree, out, fmt, progress=False, overwrite=True)
    return out


def device_accelerator(device: str):
    """None on CPU; on CUDA an accelerate.Accelerator, so that ffcv uses ToDevice and DALI mixed decode."""
    if not device.startswith("cuda"):
        return None
    from accelerate import Accelerator

    return Accelerator()


def pipeline_loader(tree: Path, backend: str, s: dict):
    """pipelines.build_loader on the converted data, with the same augmentation as the baseline."""
    from pipelines import build_loader
    from pipelines.config import DataConfig

    cfg = DataConfig(dataset="folder", backend=backend, path=str(converted(tree, backend)),
                     batch_size=s["batch_size"], workers=s["workers"], input_size=[3, s["size"], s["size"]],
                     augment=None, mixup=False, cutout=False, label_smoothing=0.0, interpolation="bicubic")
    return build_loader(cfg, "train", device_accelerator(s["device"]), seed=0)


def jpeg_decoder() -> tuple[str, object]:
    """(name and version, decode(bytes) -> RGB pixels): simplejpeg when installed, else Pillow."""
    try:
        import simplejpeg

        return f"simplejpeg {simplejpeg.__version__} (libjpeg-turbo)", simplejpeg.decode_jpeg
    except ImportError:
        import io

        import PIL
        from PIL import Image, features

        turbo = features.version_feature("libjpeg_turbo")
        name = f"Pillow {PIL.__version__} (" + (f"libjpeg-turbo {turbo})" if turbo else
                                                f"libjpeg {features.version('jpg')}, not turbo)")

        def decode(data: bytes):
            img = Image.open(io.BytesIO(data))
            img.load()  # full size (no draft scaling); converting an RGB image would only copy it
            return img if img.mode == "RGB" else img.convert("RGB")
        return name, decode


def decode_case(tree: Path, workers: int):
    """A case that reads and decodes every training JPEG on `workers` threads; returns the image count."""
    files = sorted((tree / "train").rglob("*.jpg"))
    _, decode = jpeg_decoder()

    def one(path: Path) -> int:
        decode(path.read_bytes())
        return 1

    pool = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="decode")

    def run() -> int:
        return sum(pool.map(one, files, chunksize=16))
    return run


def epoch_case(loader, device: str = "cpu"):
    """A case that iterates one epoch and returns the number of images; batches end on `device`."""
    epochs = itertools.count()
    dev = torch.device(device)

    def run() -> int:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(next(epochs))
        n = 0
        for images, _ in loader:
            if images.device != dev:  # the torchvision baseline hands over CPU tensors
                images = images.to(dev, non_blocking=True)
            n += images.shape[0]  # [B, C, H, W]
        if n == 0:
            raise RuntimeError("the loader yielded no batch: too few images for one batch?")
        return n

    return run


def build_cases(tree: Path, s: dict) -> dict:
    """One case per name in s["cases"]."""
    cases = {}
    for name in s["cases"]:
        if name == "torchvision":
            cases[name] = epoch_case(torchvision_loader(tree, s), s["device"])
        elif name in ("ffcv", "dali"):
            cases[name] = epoch_case(pipeline_loader(tree, name, s), s["device"])
        elif name == "decode":
            cases[name] = decode_case(tree, s["workers"])
        else:
            raise ValueError(f"loaders: unknown case {name!r}; choose from torchvision, ffcv, dali, decode")
    return cases


def run(bench: Bench, s: dict, cache: Path) -> None:
    """Build the data and the loaders, compare them interleaved; ratios to torchvision and to decode."""
    t0 = time.perf_counter()
    tree = build_tree(cache / f"photos-{s['images']}-{s['val_images']}-q{s['jpeg_quality']}",
                      s["images"], s["val_images"], quality=s["jpeg_quality"])
    bench.notes.append(f"loaders: data ready in {time.perf_counter() - t0:.1f} s at {tree}")
    cases = build_cases(tree, s)
    threads = {"torchvision": f"DataLoader {s['workers']} worker processes",
               "ffcv": f"{s['workers']} numba worker threads", "dali": f"{s['workers']} DALI CPU threads",
               "decode": f"{s['workers']} threads, {jpeg_decoder()[0]}"}
    baseline = "torchvision" if "torchvision" in cases else None
    extra = {"loader_threads": {k: v for k, v in threads.items() if k in cases},
             "batch_size": s["batch_size"], "size": s["size"], "images": s["images"]}
    load_start = os.getloadavg()
    samples = bench.compare(cases, metric="train_images_per_s", unit="images/s", warmup=s["warmup"],
                            repeats=s["repeats"], baseline=baseline, **extra)
    load = {"load_average_start": list(load_start), "load_average_end": list(os.getloadavg())}
    bench.notes.append(f"loaders: 1-minute load average {load_start[0]:.2f} when the timed rounds started, "
                       f"{load['load_average_end'][0]:.2f} when they ended")
    if "decode" in samples:
        for name in (n for n in samples if n != "decode"):  # per round: the loader / the decode limit
            rounds = [a / b for a, b in zip(samples[name], samples["decode"])]
            bench.add_ratio(name, "decode", "decode_limit_fraction", rounds, **extra, **load)
    if s["profile"] and "ffcv" in cases:
        profile_ffcv(bench, tree, s)


def profile_ffcv(bench: Bench, tree: Path, s: dict, rounds: int = 3) -> None:
    """Where an ffcv image's time goes, on one thread, on the same files and crop windows as the ffcv case:
    libffcv's full-size JPEG decode, its crop + INTER_AREA resize, the flip, and the main thread's uint8 ->
    normalised float batch (per image). Milliseconds per image, best of `rounds` passes over the files."""
    import numpy as np
    from ffcv.libffcv import imdecode, resize_crop
    from PIL import Image

    from pipelines.crops import sample_window

    loader = pipeline_loader(tree, "ffcv", s)
    files = sorted((tree / "train").rglob("*.jpg"))
    raw = [np.frombuffer(f.read_bytes(), np.uint8) for f in files]
    sizes = []  # (w, h)
    for f in files:
        with Image.open(f) as im:  # the header only
            sizes.append(im.size)
    wins = [sample_window(loader.recipe, True, h, w, i) for i, (w, h) in enumerate(sizes)]
    size = s["size"]
    out = np.empty((len(files), size, size, 3), np.uint8)
    full = [np.empty((h, w, 3), np.uint8) for w, h in sizes]

    def decode():
        for r, (w, h), dst in zip(raw, sizes, full):
            imdecode(r, dst, h, w, h, w, 0, 0, 1, 1, False, False)

    def crop_resize():
        for k, (img, (i, j, hh, ww, _)) in enumerate(zip(full, wins)):
            resize_crop(img, i, i + hh, j, j + ww, out[k])

    def flip():
        for k, win in enumerate(wins):
            if win[4]:
                out[k] = out[k, :, ::-1]

    batch = s["batch_size"]

    def normalise():
        for b in range(0, len(files) - batch + 1, batch):
            loader.stage(torch.from_numpy(out[b:b + batch]), torch.zeros(batch, dtype=torch.long), b)

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = {"decode (libffcv, full size)": decode, "crop + INTER_AREA resize": crop_resize,
                 "horizontal flip": flip, "normalise (main thread, per image)": normalise}
        for name, run in parts.items():
            best = []
            for _ in range(rounds):
                t = time.perf_counter()
                run()
                best.append((time.perf_counter() - t) * 1e3 / len(files))
            bench.add(f"ffcv profile: {name}", "ms_per_image_one_thread", "ms", best, size=size,
                      images=len(files))
    finally:
        torch.set_num_threads(torch_threads)
    profile_windows(bench, loader.recipe, s)


def profile_windows(bench: Bench, recipe, s: dict) -> None:
    """The host's crop windows + flips for one epoch of `window_samples` samples (ffcv fills its table with
    them at each epoch start; DALI and the .npy shards per batch): all at once (`draws.sample_windows`)
    against one `crops.sample_window` per sample, interleaved, after checking that both give the same
    windows. Image sizes drawn as ImageNet's (200-600 x 200-800 px), seeds as the loaders make them."""
    import numpy as np

    from pipelines.base import mix_seed, mix_seeds
    from pipelines.crops import sample_window
    from pipelines.draws import sample_windows

    n = s["window_samples"]
    rng = np.random.default_rng(0)
    hw = np.stack([rng.integers(200, 600, n), rng.integers(200, 800, n)], 1)
    idx = rng.permutation(max(n, 1281167))[:n]
    base = mix_seed(0, 0, 0x5A)

    def numpy_draws():
        return sample_windows(recipe, True, hw, mix_seeds(base, idx))

    def loop():
        seeds = [mix_seed(base, int(i)) for i in idx.tolist()]
        return np.array([sample_window(recipe, True, h, w, seed) for (h, w), seed in zip(hw.tolist(), seeds)])

    if not np.array_equal(numpy_draws(), loop()):
        raise AssertionError("draws.sample_windows differs from crops.sample_window: a bug, please report it")

    def case(draw):  # a bench case: one epoch's windows, counted in samples
        def run() -> int:
            draw()
            return n
        return run

    cases = {"windows: draws.sample_windows": case(numpy_draws), "windows: per-sample loop": case(loop)}
    bench.compare(cases, metric="windows_per_s", unit="samples/s", warmup=0, repeats=s["repeats"],
                  baseline="windows: per-sample loop", window_samples=n)
