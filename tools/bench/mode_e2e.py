"""Mode `e2e`: training end to end. Two forms:

`--set config=FILE` (a shipped config, e.g. configs/direct_training/cifar10.yaml): `python -m launch.train`
as a user runs it, in a subprocess, with start-up time and peak RSS; with `--official PATH` against the
official script on the same data; see tools/bench/e2e_shipped.py. Settings used: config, overrides,
batch_size, steps, warmup_steps, repeats (rounds), images, val_images, timeout_s, official_config,
official_args.

Without config: the real trainer (launch.build.build_trainer) in this process, steps/s and the data-wait
share per loader backend. The trainer is built from a Config (tiny model, the real-photo JPEG tree of the
loaders mode, one loader backend per case, DA-SSDP on by default) and driven epoch by epoch through
`Trainer.train_epoch`, capped by `train.max_steps_per_epoch`. Its training loader is wrapped in a proxy
that measures the time spent in `next()`: data wait share = that time / the epoch's wall time. Backends
run interleaved A B A B.
"""
from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from tools.bench.harness import Bench
from tools.bench.mode_loaders import converted
from tools.bench.photos import build_tree

# 32 px on CPU: the tiny model's first-stage attention grows with the square of the token count
# (64 px costs ~10x more per step); tools/gpu_check.sh runs spikingresformer_ti at 224 px instead.
FULL = {"model": "spikingresformer_tiny", "T": 4, "size": 32, "batch_size": 32, "workers": 2,
        "backends": ["torchvision", "ffcv", "dali"], "images": 3000, "val_images": 100, "jpeg_quality": 90,
        "steps": 10, "repeats": 3, "warmup": 1, "amp": False, "dassdp": True,
        # the shipped-config form (config set): steps per run, the first warmup_steps not timed
        "config": "", "overrides": [], "warmup_steps": 2, "timeout_s": 3600.0,
        "official_config": "configs/direct_training/cifar10.yaml", "official_args": []}
QUICK = {**FULL, "images": 768, "steps": 4, "repeats": 2, "batch_size": 16, "timeout_s": 900.0}


class TimedLoader:
    """Wraps a Loader; accumulates the seconds spent waiting in `next()`."""

    def __init__(self, loader):
        self.loader, self.wait = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.wait += time.perf_counter() - t0
            yield batch


def build_config(backend: str, data_path: Path, out: Path, s: dict):
    """The trainer's Config for one backend (strict schema, derived values filled in)."""
    from launch.config import derive, from_dict

    raw = {"model": {"name": s["model"], "T": s["T"]},
           "data": {"dataset": "folder", "backend": backend, "path": str(data_path),
                    "batch_size": s["batch_size"], "workers": s["workers"],
                    "input_size": [3, s["size"], s["size"]], "augment": None, "mixup": False},
           "train": {"epochs": 1000, "output_dir": str(out), "amp": s["amp"],
                     "max_steps_per_epoch": s["steps"], "eval_every": 1000},
           "dassdp": {"enabled": s["dassdp"], "warmup_steps": 2},
           "log": {"tensorboard": False, "progress": False, "every_steps": 1000}}
    return derive(from_dict(raw, "<dassdp-bench e2e>"), "<dassdp-bench e2e>")


def trainer_case(trainer, waits: list[float]):
    """A case running one capped epoch of the trainer; appends the data-wait share; returns steps done."""
    proxy = TimedLoader(trainer.train_loader)
    trainer.train_loader = proxy
    epochs = itertools.count()

    def run() -> int:
        proxy.wait, step0 = 0.0, trainer.progress.step
        trainer.progress.batch = 0  # a fresh epoch each call
        t0 = time.perf_counter()
        trainer.train_epoch(next(epochs))
        waits.append(proxy.wait / (time.perf_counter() - t0))
        return trainer.progress.step - step0
    return run


def run(bench: Bench, s: dict, cache: Path) -> None:
    """The shipped-config form when `config` is set, else the in-process trainer per loader backend."""
    if s["config"]:
        from tools.bench.e2e_shipped import run_shipped

        run_shipped(bench, s, cache)
        return
    if s["official_path"]:
        bench.notes.append("e2e: --official is used with --set config=FILE only (the shipped-config form)")
    run_backends(bench, s, cache)


def run_backends(bench: Bench, s: dict, cache: Path) -> None:
    """Build one trainer per backend, run capped epochs interleaved; steps/s, images/s, data wait."""
    from launch.build import build_accelerator, build_trainer

    tree = build_tree(cache / f"photos-{s['images']}-{s['val_images']}-q{s['jpeg_quality']}",
                      s["images"], s["val_images"], quality=s["jpeg_quality"])
    cases, waits = {}, {}
    with tempfile.TemporaryDirectory(prefix="dassdp-bench-e2e-") as tmp:
        for backend in s["backends"]:
            path = tree if backend == "torchvision" else converted(tree, backend)
            cfg = build_config(backend, path, Path(tmp) / backend, s)
            trainer = build_trainer(cfg, build_accelerator(cfg))
            waits[backend] = []
            cases[backend] = trainer_case(trainer, waits[backend])
        label = f"{s['model']} {s['size']}px T={s['T']} B={s['batch_size']} dassdp={s['dassdp']}"
        extra = {"label": label, "loader_workers": s["workers"]}
        base = "torchvision" if "torchvision" in cases else None
        samples = bench.compare(cases, metric="train_steps_per_s", unit="steps/s", warmup=s["warmup"],
                                repeats=s["repeats"], baseline=base, **extra)
        for backend, vals in samples.items():
            B = s["batch_size"]
            bench.add(backend, "train_images_per_s", "images/s", [v * B for v in vals], **extra)
            shares = [100 * w for w in waits[backend][-len(vals):]]  # the timed epochs, not the warm-up
            bench.add(backend, "data_wait_share", "%", shares, **extra)
