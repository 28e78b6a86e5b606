"""Checkpoints: atomic writes, RNG states as tensors, weights-only loading, safetensors export.

A checkpoint is a plain dict of tensors and Python primitives, so `torch.load(weights_only=True)` reads it
and nothing in the file can run code. Layout (keys):
  model, optimizer, scheduler, scaler, hooks (name -> state), epoch, batch (micro-batches of `epoch`
  already consumed), step (optimizer steps), best_acc1, samples, skipped_nonfinite, skipped_overflow (the
  last three absent in files written before they existed), rng (one entry per rank), world_size,
  batch_size, config, versions, kind ("last" | "best"), format (int), digest (sha256 over every other
  entry, see `state_digest`; absent in files written before it existed, which are read unverified).
`model` under that key also makes our files readable as official `{"model": state_dict}` files.

Next to `last.pt` a run keeps `last.prev.pt`: the previous `last`, hard-linked aside only once the new
file is complete (written, fsynced), just before the rename that publishes it. `--resume auto` reads
`last.pt`; when that one is damaged (truncated, digest mismatch, another architecture) it says so and
resumes from the newest good one of `last.prev.pt` and `best.pt`. The damaged file stays as `last.pt`
until the next checkpoint is complete; then it is renamed `last.pt.damaged-<time>` (kept, for a look)
instead of becoming `last.prev.pt`.
"""
from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from launch.environment import versions  # noqa: F401  (re-exported: checkpoints record it)
from launch.errors import CheckpointLoadError  # noqa: F401  (re-exported: raised by the readers below)
from models.checkpoint import load_error_reason

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


def atomic_write(path: str | Path, write, before_publish=None) -> Path:
    """`write(file_object)` into a temporary file, fsync, `before_publish()` if given, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_publish is not None:
            before_publish()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def state_digest(state: dict) -> str:
    """sha256 over every entry of a checkpoint dict but `digest`: key paths, tensors' dtype, shape, bytes."""
    h = hashlib.sha256()

    def walk(obj, where: str) -> None:
        if isinstance(obj, dict):
            for k in sorted(obj, key=repr):
                if not (where == "" and k == "digest"):
                    walk(obj[k], f"{where}/{k!r}")
        elif isinstance(obj, (list, tuple)):
            h.update(f"{where}:{type(obj).__name__}[{len(obj)}]".encode())
            for i, v in enumerate(obj):
                walk(v, f"{where}/{i}")
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous()
            h.update(f"{where}:{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{where}={obj!r}".encode())

    walk(state, "")
    return h.hexdigest()


def previous_path(path: Path) -> Path:
    """Where the previous version of `path` is kept: last.pt -> last.prev.pt."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _keep_previous(path: Path, damaged: bool) -> None:
    """Before `path` is replaced: link it aside as <stem>.prev (or <name>.damaged-<time> if `damaged`)."""
    if not path.is_file():
        return
    if damaged:  # evidence: its own name, never over the good previous checkpoint
        os.replace(path, path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"))
        return
    link = path.with_name(f".{path.name}.prev-{os.getpid()}")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)  # path keeps its bytes until the new file is renamed over it
        os.replace(link, previous_path(path))
    except OSError:  # no hard links here: a copy of the complete file
        import shutil

        shutil.copyfile(path, link)
        os.replace(link, previous_path(path))


def save_checkpoint(state: dict, path: str | Path, *, keep_previous: bool = False,
                    replaces_damaged: bool = False) -> Path:
    """Write a checkpoint dict atomically (a crash leaves the previous file intact), its digest included.

    keep_previous: the file it replaces becomes <stem>.prev<suffix> (or, `replaces_damaged`, is renamed
    <name>.damaged-<time>), once the new file is complete.
    """
    state = dict(state, format=FORMAT)
    state["digest"] = state_digest(state)
    path = Path(path)
    aside = (lambda: _keep_previous(path, replaces_damaged)) if keep_previous else None
    try:
        return atomic_write(path, lambda f: torch.save(state, f), before_publish=aside)
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
        raise CheckpointLoadError(f"checkpoint {path} cannot be read safely ({load_error_reason(e)}); it is "
                                  "truncated, corrupt or not a checkpoint of this trainer") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointLoadError(f"checkpoint {path} has no `model` entry; it is not a training checkpoint")
    if "digest" in state and state["digest"] != state_digest(state):
        raise CheckpointLoadError(f"checkpoint {path} is damaged: its contents differ from the sha256 digest "
                                  "stored when it was written; resume from an earlier checkpoint")
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

