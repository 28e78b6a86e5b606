"""Data pipelines: one `build_loader`, one batch contract, backends ffcv, dali, torchvision, dvs."""
from __future__ import annotations

from typing import Any

from pipelines.base import DataError, Loader
from pipelines.config import DataConfig

__all__ = ["DataConfig", "DataError", "Loader", "build_loader"]


def build_loader(data_cfg: DataConfig, split: str, accelerator: Any = None, *, seed: int = 0,
                 T: int | None = None) -> Loader:
    """Loader of (images, targets) batches on `accelerator.device` for `split` ("train" or "val")."""
    backend = data_cfg.backend
    if backend == "torchvision":
        from pipelines.torchvision_loader import TorchvisionLoader as cls
    elif backend == "ffcv":
        from pipelines.ffcv_loader import FFCVLoader as cls
    elif backend == "dali":
        from pipelines.dali_loader import DALILoader as cls
    elif backend == "dvs":
        from pipelines.dvs_loader import DVSLoader as cls
    else:
        raise ValueError(f"data.backend={backend!r}: use one of torchvision, ffcv, dali, dvs")
    return cls(data_cfg, split, accelerator, seed=seed, T=T)
