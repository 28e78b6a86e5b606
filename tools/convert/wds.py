"""Deterministic webdataset tar shards and DALI index files (the format DALI's `wds2idx` writes)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .common import ConvertError

IDX_VERSION = "v1.2"


def build_tar(samples: Iterable[tuple[str, bytes, int]]) -> tuple[bytes, str]:
    """(key, jpeg bytes, label) -> (ustar tar bytes with <key>.jpg + <key>.cls, DALI index text)."""
    buf = io.BytesIO()
    lines = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, jpeg, label in samples:
            parts = []
            for ext, data in (("jpg", jpeg), ("cls", np.int64(label).astype("<i8").tobytes())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                offset = buf.tell() + tarfile.BLOCKSIZE  # member data follows its 512-byte header
                tar.addfile(info, io.BytesIO(data))
                parts.append(f"{ext} {offset} {len(data)} {info.name}")
            lines.append(" ".join(parts))
    if not lines:
        raise ConvertError("internal: an empty tar shard was requested.")
    index = f"{IDX_VERSION} {len(lines)}\n" + "".join(line + "\n" for line in lines)
    return buf.getvalue(), index


def read_index(idx_path: Path) -> list[dict[str, tuple[int, int, str]]]:
    """Parse a DALI webdataset index: one {ext: (offset, size, name)} per sample."""
    lines = Path(idx_path).read_text().splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != IDX_VERSION or int(head[1]) != len(lines) - 1:
        raise ConvertError(f"{idx_path}: bad index header {lines[:1]}; regenerate the output.")
    out = []
    for line in lines[1:]:
        tok = line.split()
        out.append({tok[i]: (int(tok[i + 1]), int(tok[i + 2]), tok[i + 3]) for i in range(0, len(tok), 4)})
    return out


def iter_shard(tar_path: Path, idx_path: Path) -> Iterator[tuple[str, bytes, int]]:
    """Yield (key, jpeg bytes, label) of a shard, checking that the index points at the tar's members."""
    index = read_index(idx_path)
    data = Path(tar_path).read_bytes()
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    if len(members) != 2 * len(index):
        raise ConvertError(f"{tar_path}: {len(members)} members but the index lists {len(index)} samples.")
    for i, entry in enumerate(index):
        if set(entry) != {"jpg", "cls"}:
            raise ConvertError(
                f"{idx_path}: sample {i} has components {sorted(entry)}, expected jpg and cls."
            )
        (jo, js, jname), (co, cs, cname) = entry["jpg"], entry["cls"]
        for m, (off, size, name) in zip(members[2 * i : 2 * i + 2], (entry["jpg"], entry["cls"])):
            if (m.name, m.offset_data, m.size) != (name, off, size):
                raise ConvertError(f"{idx_path}: entry {name} does not match tar member {m.name}.")
        if cs != 8:
            raise ConvertError(f"{tar_path}: {cname} holds {cs} bytes, expected an 8-byte int64 label.")
        label = int(np.frombuffer(data[co : co + 8], "<i8")[0])
        yield jname.rsplit(".", 1)[0], data[jo : jo + js], label
