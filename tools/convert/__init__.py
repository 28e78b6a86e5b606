"""dassdp-convert: datasets -> FFCV (.beton) or DALI (webdataset tar + idx, npy) folders with a manifest.

Python API:
    convert(source, src_path, out, fmt, **opts) -> manifest dict
    verify(out) -> {"files": n, "train": n, "val": n}
    read_samples(out, split) -> iterator of (array, label)
"""

from .api import SOURCES, convert, scan
from .common import ConvertError
from .events import events_to_frames, read_aedat2, read_aedat4
from .verify import load_manifest, read_samples, verify

__all__ = [
    "SOURCES",
    "ConvertError",
    "convert",
    "events_to_frames",
    "load_manifest",
    "read_aedat2",
    "read_aedat4",
    "read_samples",
    "scan",
    "verify",
]
