"""dvs backend: event frames [T, 2, H, W] from a .beton or numpy shards; resize + augment on the device."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipelines.base import Loader
from pipelines.ffcv_loader import beton_labels, beton_path, guarded_iter, make_order
from pipelines.shards import ArrayShards, require_manifest


class DVSLoader(Loader):
    """Frames batches uint16 [B, T, 2, H, W]; the device stage resizes, augments and adds pos+neg."""

    def _read_labels(self) -> np.ndarray:
        root = Path(self.cfg.path)
        fmt = "ffcv" if (root / f"{self.split}.beton").is_file() else "dali"
        self.manifest = require_manifest(self.cfg.path, fmt)
        if self.manifest.get("kind") != "frames":
            raise ValueError(f"{root}/manifest.json says kind={self.manifest.get('kind')!r}; backend dvs "
                             "reads event frames (convert with dassdp-convert events or cifar10dvs)")
        stored_T = (self.manifest.get("frames") or {}).get("T") or (self.manifest.get("shapes", {})
                                                                     .get("frames", [None])[0])
        if self.T is not None and stored_T is not None and int(stored_T) != int(self.T):
            raise ValueError(f"{root} holds T={stored_T} frames per sample but the model wants T={self.T}: "
                             f"re-convert with --T {self.T}")
        self._check_classes(root)
        self._ffcv = None
        if fmt == "ffcv":
            self.beton, self.arrays = beton_path(self.cfg.path, self.split), None
            return beton_labels(self.beton)
        meta = ((self.manifest.get("dtypes") or {}).get("frames", "uint16"),
                (self.manifest.get("shapes") or {}).get("frames"))
        self.arrays = ArrayShards(root / self.split, "frames", *meta)
        return self.arrays.labels

    def _check_classes(self, root: Path) -> None:
        """An `events` dataset has no fixed class count: data.num_classes must equal the manifest's."""
        n = len(self.manifest.get("classes") or [])
        if self.cfg.dataset == "events" and self.recipe.num_classes != n:
            given = "is not set" if self.recipe.num_classes is None else f"is {self.recipe.num_classes}"
            raise ValueError(f"{root}/manifest.json lists {n} classes but data.num_classes {given}: "
                             f"set data.num_classes={n}")

    def _build(self):
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.ndarray import NDArrayDecoder
        from ffcv.loader import Loader as FfcvLoader
        from ffcv.transforms import Squeeze, ToDevice, ToTensor

        cuda = self.device.type == "cuda"
        to_dev = [ToDevice(self.device, non_blocking=True)] if cuda else []  # needs CUDA
        pipes = {"frames": [NDArrayDecoder(), ToTensor(), *to_dev],
                 "label": [IntDecoder(), ToTensor(), Squeeze(1), *to_dev]}
        with warnings.catch_warnings():  # ffcv warns about uint16 tensors; the stage converts to float
            warnings.filterwarnings("ignore", message="Pytorch currently doesn't support uint16")
            self._ffcv = self._make(FfcvLoader, pipes)

    def _make(self, FfcvLoader, pipes):
        return FfcvLoader(str(self.beton), batch_size=self.batch_size, num_workers=max(1, self.workers),
                          os_cache=self.cfg.os_cache, order=make_order(self), pipelines=pipes,
                          drop_last=self.drop_last, seed=self.seed, batches_ahead=2)

    def _batches(self, order: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.arrays is not None:
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                yield torch.from_numpy(self.arrays.gather(idx)), torch.from_numpy(self.labels[idx])
            return
        if self._ffcv is None:
            self._build()
        type(self._ffcv_order).current = order.astype(np.uint64)
        self._ffcv.first_traversal_order = order
        for x, y in guarded_iter(self._ffcv, self.beton):
            yield x.clone(), y.clone()  # ffcv reuses its buffers
