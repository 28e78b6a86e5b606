"""Shared helpers of the converter: errors, atomic writes, checksums, natural sort, safe unpickling."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

VERSION = "0.1.0"
WORK = ".work"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class ConvertError(Exception):
    """One problem with the input or the output folder, naming the file and what to do."""


def tmp_name(path: Path) -> Path:
    """Temporary sibling name for an atomic write of `path`."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary name and os.replace (never a half file under `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (sorted keys) and atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def npy_bytes(arr) -> bytes:
    """Bytes of `numpy.save(arr)` (deterministic, no pickle)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_obj(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders `x_2` before `x_10`."""
    return [int(t) if t.isdigit() else t for t in _NUM.split(name)]


def list_class_dirs(root: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `root`."""
    if not root.is_dir():
        raise ConvertError(f"{root}: not a folder; pass the root of a class-folder tree.")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def file_fingerprint(path: Path) -> list:
    """(name, size, mtime_ns) of a file: cheap identity used to validate resume state."""
    name = str(path)
    st = Path(name.split("|")[0]).stat()  # "file|t0|t1" names a segment of a DVS128 Gesture recording
    return [name, st.st_size, st.st_mtime_ns]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds the numpy objects a CIFAR release contains (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def load_pickle(path: Path) -> dict:
    """Load a CIFAR python-pickle file safely; keys are returned as str."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise ConvertError(f"{path}: missing; expected the python-pickle release files here.") from None
    except Exception as e:  # truncated/corrupt pickles raise many types
        raise ConvertError(
            f"{path}: unreadable pickle ({type(e).__name__}: {e}); re-download or re-extract this file."
        ) from None
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}.")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
