"""Helpers shared by the pipelines tests (unique module name: the suite has several conftest.py)."""
from __future__ import annotations

from pipelines import DataConfig, build_loader

N_TRAIN, N_VAL, CLASSES = 32, 12, 3


def image_cfg(backend: str, path, **kw) -> DataConfig:
    """DataConfig for the 3-class JPEG fixture."""
    folder = kw.get("dataset", "folder") == "folder"  # cifar/fmnist runs keep their own 10 classes
    base = dict(dataset="folder", backend=backend, path=str(path), batch_size=4, workers=1,
                num_classes=CLASSES if folder else None)
    base.update(kw)
    return DataConfig(**base)


_CACHE: dict = {}


def cached_loader(cfg: DataConfig, split: str, **kw):
    """One loader per (config, split) per session: ffcv compiles its pipeline once per loader (seconds)."""
    key = (repr(cfg), split, repr(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = build_loader(cfg, split, **kw)
    return _CACHE[key]
