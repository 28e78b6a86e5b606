"""Readers of the converter's DALI layout: webdataset tar shards + idx, and numpy array shards."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from pipelines.base import DataError


def require_manifest(root: str, fmt: str) -> dict:
    """OUT/manifest.json of a finished conversion in format `fmt`, or one clear error."""
    p = Path(root) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: {root} is not a finished `dassdp-convert --format {fmt}` "
                                f"output (the manifest is written last); run the conversion again")
    m = json.loads(p.read_text())
    if m.get("format") != fmt:
        raise ValueError(f"{p} says format={m.get('format')!r}, but data.backend needs {fmt!r}")
    return m


class TarShards:
    """Random access to `<key>.jpg` / `<key>.cls` members through the wds2idx v1.2 index files."""

    def __init__(self, root: Path):
        self.tars = sorted(root.glob("shard-*.tar"))
        shard, off, size, cls_off = [], [], [], []
        for s, tar in enumerate(self.tars):
            idx = tar.with_suffix(".idx")
            if not idx.is_file():
                raise FileNotFoundError(f"{idx} is missing (DALI index of {tar.name}); re-run the conversion")
            lines = idx.read_text().split("\n")
            for line in lines[1:]:
                tok = line.split()
                if not tok:
                    continue
                comp = {tok[k]: (int(tok[k + 1]), int(tok[k + 2])) for k in range(0, len(tok), 4)}
                if "jpg" not in comp or "cls" not in comp:
                    raise ValueError(f"{idx}: line {line!r} lacks a jpg or cls member")
                shard.append(s)
                off.append(comp["jpg"][0])
                size.append(comp["jpg"][1])
                cls_off.append(comp["cls"][0])
        self.shard, self.off, self.size = np.array(shard), np.array(off), np.array(size)
        self.maps = [np.memmap(t, dtype=np.uint8, mode="r") for t in self.tars]
        cls = np.array(cls_off)
        self.labels = np.empty(len(shard), dtype=np.int64)
        for s, mm in enumerate(self.maps):
            sel = np.nonzero(self.shard == s)[0]
            if len(sel) and cls[sel].max() + 8 > len(mm):
                raise DataError(f"{self.tars[s]} is shorter than its index says; the shard is truncated")
            raw = mm[cls[sel, None] + np.arange(8)]  # [n, 8] little-endian int64
            self.labels[sel] = raw.copy().view("<i8")[:, 0]

    def name(self, i: int) -> str:
        """Shard file and member of sample i."""
        return f"{self.tars[self.shard[i]]}:{self.off[i]}"

    def read(self, i: int) -> bytes:
        """JPEG bytes of sample i."""
        mm = self.maps[self.shard[i]]
        o, n = self.off[i], self.size[i]
        if o + n > len(mm):
            raise DataError(f"{self.tars[self.shard[i]]} (sample {i}) ends before its JPEG; shard truncated")
        return mm[o:o + n].tobytes()

    def explain(self, idx: np.ndarray, blobs: list[bytes], err: Exception) -> DataError:
        """The DataError naming the sample of a failed batch that does not decode."""
        from PIL import Image

        for i, b in zip(idx.tolist(), blobs):
            try:
                Image.open(io.BytesIO(b)).load()
            except Exception as e:  # noqa: BLE001 - we only name the culprit
                return DataError(f"{self.name(i)} (sample {i}) failed to decode: {e}")
        return DataError(f"DALI failed on samples {idx.tolist()} of {self.tars[0].parent}: {err}")


def _check_array(f: Path, arr: np.ndarray, dtype: str | None, shape: list | None) -> None:
    """A shard must hold what the manifest says (dtype, per-sample shape): else one DataError naming it."""
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise DataError(f"{f} holds {arr.dtype} samples, the manifest says {dtype}; the shard is not "
                        "dassdp-convert output: re-run the conversion")
    if isinstance(shape, (list, tuple)) and tuple(arr.shape[1:]) != tuple(shape):
        raise DataError(f"{f} holds samples of shape {list(arr.shape[1:])}, the manifest says {list(shape)}; "
                        "re-run the conversion")


class ArrayShards:
    """`<stem>-%05d.npy` + `labels-%05d.npy` shards, memory-mapped and concatenated in sample order."""

    def __init__(self, root: Path, stem: str, dtype: str | None = None, shape: list | None = None):
        files = sorted(root.glob(f"{stem}-*.npy"))
        if not files:
            raise FileNotFoundError(f"no {stem}-*.npy shards under {root}; re-run the conversion")
        self.parts, labels = [], []
        for f in files:
            lab = f.with_name(f.name.replace(stem, "labels"))
            if not lab.is_file():
                raise FileNotFoundError(f"{lab} is missing (labels of {f.name})")
            self.parts.append(np.load(f, mmap_mode="r"))
            labels.append(np.load(lab))
            _check_array(f, self.parts[-1], dtype, shape)
            if len(labels[-1]) != len(self.parts[-1]):
                raise DataError(f"{f} holds {len(self.parts[-1])} samples but {lab.name} {len(labels[-1])}")
        self.labels = np.concatenate(labels).astype(np.int64)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Samples idx stacked (one copy)."""
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        return np.stack([self.parts[s][i - self.starts[s]] for s, i in zip(shard.tolist(), idx.tolist())])

    def batches(self, loader, order: np.ndarray):
        """uint8 [B, 3, H, W] batches: each sample's window (crop of the recipe, same draws as the other
        backends: draws.sample_windows) resized to the model input and flipped."""
        from pipelines.draws import sample_windows

        size, recipe = loader.recipe.size, loader.recipe
        mode = "bicubic" if loader.cfg.interpolation == "bicubic" else "bilinear"
        for s in range(0, len(order), loader.batch_size):
            idx = order[s:s + loader.batch_size]
            x = torch.from_numpy(self.gather(idx)).to(loader.device).permute(0, 3, 1, 2)  # [B, 3, h, w]
            h, w = x.shape[-2:]
            hw = np.tile([h, w], (len(idx), 1))
            win = sample_windows(recipe, loader.train, hw, loader.sample_seeds(idx))
            if (win[:, :4] == [0, 0, h, w]).all():  # whole images: one batched resize
                x = _resize(x, size, mode)
            else:
                x = torch.cat([_resize(x[k:k + 1, :, t:t + ch, c:c + cw], size, mode)
                               for k, (t, c, ch, cw, _) in enumerate(win.tolist())])
            f = torch.from_numpy(win[:, 4] != 0).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(f, x.flip(-1), x)
            yield x, torch.from_numpy(self.labels[idx])


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 [B, 3, h, w] -> uint8 [B, 3, H, W] (antialiased); unchanged when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = torch.nn.functional.interpolate(x.float(), size=size, mode=mode, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)
