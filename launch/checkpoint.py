"""Checkpoints: atomic writes, RNG states as tensors, weights-only loading, safetensors export.

A checkpoint is a plain dict of tensors and Python primitives, so `torch.load(weights_only=True)` reads it
and nothing in the file can run code. Layout (keys):
  model, optimizer, scheduler, scaler, hooks (name -> state), epoch, batch (micro-batches of `epoch`
  already consumed), step (optimizer steps), best_acc1, samples, skipped_nonfinite, skipped_overflow (the
  last three absent in files written before they existed), rng (one entry per rank), world_size,
  batch_size, config, versions, kind ("last" | "best"), format (int).
`model` under that key also makes our files readable as official `{"model": state_dict}` files.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from launch.environment import versions  # noqa: F401  (re-exported: checkpoints record it)
from launch.errors import CheckpointLoadError  # noqa: F401  (re-exported: raised by the readers below)

FORMAT = 1


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, CUDA) as tensors and plain types."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # needs CUDA
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # needs CUDA
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(file_object)` on a temporary file, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write a checkpoint dict atomically (a crash leaves the previous file intact)."""
    state = dict(state, format=FORMAT)
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        raise CheckpointLoadError(f"could not write checkpoint {path}: {e.strerror or e}; the previous "
                                  "checkpoint (if any) is unchanged — free disk space and resume") from e


def plain_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (channels-last weights become standard layout) for safetensors."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def export_safetensors(model_sd: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None):
    """Model weights as a .safetensors file, written atomically."""
    from safetensors.torch import save

    meta = {k: str(v) for k, v in (metadata or {}).items()}
    blob = save(plain_state_dict(model_sd), metadata=meta)
    return atomic_write(path, lambda f: f.write(blob))


# ----------------------------------------------------------------------------- reading
def load_checkpoint(path: str | Path) -> dict:
    """Read one of our checkpoints without unpickling arbitrary objects (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint {path} does not exist; pass an existing file or `auto`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, forbidden globals
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        why = next((x for x in lines if "Unsupported global" in x), lines[0])
        raise CheckpointLoadError(f"checkpoint {path} cannot be read safely ({why[:200]}); it is "
                                  "truncated, corrupt or not a checkpoint of this trainer") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointLoadError(f"checkpoint {path} has no `model` entry; it is not a training checkpoint")
    return state


def resume_path(resume: str | None, ckpt_dir: Path) -> Path | None:
    """`auto` -> the run's `last.pt` if present (else None = fresh start); a PATH must exist."""
    if resume is None:
        return None
    if resume == "auto":
        last = ckpt_dir / "last.pt"
        return last if last.is_file() else None
    p = Path(resume)
    if not p.is_file():
        raise CheckpointLoadError(f"--resume {resume}: no such file; pass a checkpoint path or `auto`")
    return p

