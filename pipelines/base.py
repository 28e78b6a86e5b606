"""The one batch contract: ordering, sharding, resume and the device stage shared by every backend."""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pipelines.config import DataConfig
from pipelines.recipe import Recipe, resolve

_M64 = (1 << 64) - 1


class DataError(RuntimeError):
    """A sample that cannot be read or decoded; the message names the file and index."""


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 chain); same on every platform."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = _mix_step(h, int(v))
    return h >> 1


def _mix_step(h, v):
    """One splitmix64 step of mix_seed's chain, on Python ints or uint64 arrays (which wrap by themselves:
    the masks change nothing there)."""
    h = (h ^ (v & _M64)) & _M64
    h = (h + 0x9E3779B97F4A7C15) & _M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
    return h ^ (h >> 31)


def mix_seeds(base: int, values: np.ndarray) -> np.ndarray:
    """`mix_seed(base, v)` for every v of an integer array (int64), without a Python loop."""
    h = _mix_step(_mix_step(0x9E3779B97F4A7C15, int(base)), np.asarray(values).astype(np.uint64))
    return (h >> 1).astype(np.int64)


def epoch_order(n: int, *, seed: int, epoch: int, rank: int, world: int, order: str, train: bool,
                drop_last: bool) -> np.ndarray:
    """This rank's sample indices for one epoch: disjoint strided shard of one global order."""
    rng = np.random.default_rng([seed, epoch, 0x0D])
    if order == "sequential" or not train:
        perm = np.arange(n)
    elif order == "quasi_random":  # shuffle blocks of 256 consecutive samples (page-local reads), then within
        blocks = np.array_split(np.arange(n), max(1, -(-n // 256)))
        perm = np.concatenate([rng.permutation(blocks[i]) for i in rng.permutation(len(blocks))])
    else:
        perm = rng.permutation(n)
    if train and world > 1:
        if drop_last:
            return perm[rank::world][: n // world]  # equal per rank; < world samples unused
        padded = np.resize(perm, -(-n // world) * world)  # wrap-around padding, like DistributedSampler
        return padded[rank::world]
    return perm[rank::world]


class Loader:
    """Backend-independent part: length, resume, device transfer, RandAugment, normalise, mixup."""

    def __init__(self, cfg: DataConfig, split: str, accelerator: Any = None, *, seed: int = 0,
                 T: int | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}: use 'train' or 'val'")
        self.cfg, self.split, self.train, self.T = cfg, split, split == "train", T
        self.recipe: Recipe = resolve(cfg)
        self.device = torch.device(accelerator.device) if accelerator is not None else torch.device("cpu")
        self.rank = int(getattr(accelerator, "process_index", 0)) if accelerator is not None else 0
        self.world = int(getattr(accelerator, "num_processes", 1)) if accelerator is not None else 1
        self.seed, self.epoch, self.start_batch = int(seed), 0, 0
        self.batch_size = int(cfg.batch_size)
        if not isinstance(cfg.workers, int):  # dassdp-train resolves auto (launch.precision.resolve_workers)
            raise ValueError(f"data.workers={cfg.workers!r}: give the loader a count (0 or more); `auto` is "
                             "resolved by dassdp-train")
        self.workers = int(cfg.workers)
        self.drop_last = bool(cfg.drop_last) and self.train
        self.labels = np.asarray(self._read_labels(), dtype=np.int64)  # [N] whole split, all ranks
        self._check_labels()
        from pipelines.stage import DeviceStage  # late import: stage imports augment modules

        self.stage = DeviceStage(self.recipe, cfg, self.train, self.device)

    def _check_labels(self) -> None:
        """Every label lies in [0, classes) (recipe count, else the manifest's), else one DataError."""
        names = (getattr(self, "manifest", None) or {}).get("classes")
        n = self.recipe.num_classes or (len(names) if names else None)
        bad = np.nonzero((self.labels < 0) | (self.labels >= n))[0] if n and len(self.labels) else []
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{self.cfg.path} ({self.split}): sample {i} has label {int(self.labels[i])}, "
                            f"outside the {n} classes ({len(bad)} such samples); re-run the conversion")

    # -- backend interface -------------------------------------------------------------------
    def _read_labels(self) -> np.ndarray:
        raise NotImplementedError

    def _batches(self, order: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images [B,H,W,3] or [B,3,H,W] or frames, int64 labels) for `order`, in batches."""
        raise NotImplementedError

    # -- contract -----------------------------------------------------------------------------
    def indices(self) -> np.ndarray:
        """This rank's sample order for the current epoch (all batches, before start_batch)."""
        idx = epoch_order(len(self.labels), seed=self.seed, epoch=self.epoch, rank=self.rank,
                          world=self.world, order=self.cfg.order, train=self.train, drop_last=self.drop_last)
        if self.drop_last:
            idx = idx[: len(idx) // self.batch_size * self.batch_size]
        return idx

    def __len__(self) -> int:
        n = len(self.indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples per epoch over all ranks."""
        if self.train:
            return len(self) * self.batch_size * self.world if self.drop_last else len(self.labels)
        return len(self.labels)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (order and augmentation) and the batch the next iteration starts at."""
        if start_batch < 0 or start_batch > len(self):
            raise ValueError(f"start_batch={start_batch} outside 0..{len(self)}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def sample_seeds(self, idx: np.ndarray) -> np.ndarray:
        """Per-sample augmentation seeds: a function of (seed, epoch, dataset index) only."""
        return mix_seeds(mix_seed(self.seed, self.epoch, 0x5A), idx)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()[self.start_batch * self.batch_size:]
        first, self.start_batch = self.start_batch, 0
        for b, (x, y) in enumerate(self._batches(order), start=first):
            gen_seed = mix_seed(self.seed, self.epoch, b, self.rank, 0xB7)
            yield self.stage(x, y, gen_seed)


class seeded_python_random:
    """Context: python `random` and numpy global RNG seeded, restored afterwards (for timm ops)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.saved = random.getstate(), np.random.get_state()
        random.seed(self.seed)
        np.random.seed(self.seed % (1 << 32))

    def __exit__(self, *exc):
        random.setstate(self.saved[0])
        np.random.set_state(self.saved[1])
