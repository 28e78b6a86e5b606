"""glibc malloc settings for CPU training: keep freed memory in the heap for the next step.

PyTorch allocates CPU tensors with glibc malloc, which serves every block above its mmap threshold (at most
32 MiB) with a fresh mmap and unmaps it on free. A training step allocates and frees the same activations
and gradients every time, so each of them first page-faults its memory in again (the kernel zeroes every
page): on a 2-core machine that is a quarter or more of a SpikingResformer train step. With mmap off and a
high trim threshold, freed blocks stay in the heap and the next step reuses most of them. Cost: the process
does not give memory back between steps (peak RSS measured +17 % for spikingresformer_cifar B=32).

Equivalent environment for a whole process from its start (what `dassdp-bench model --set malloc_reuse=true`
sets for the official worker): MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=67108864.
"""
from __future__ import annotations

import ctypes
import sys

# (mallopt parameter, its environment variable, value): no mmap, trim only above 2 GiB, heap grows by 64 MiB
_SETTINGS = ((-4, "MALLOC_MMAP_MAX_", 0), (-1, "MALLOC_TRIM_THRESHOLD_", 2**31 - 1),
             (-2, "MALLOC_TOP_PAD_", 64 << 20))
ENV = {name: str(value) for _, name, value in _SETTINGS}


def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed memory (see module doc); False where that is not glibc/Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    return all(mallopt(param, value) == 1 for param, _, value in _SETTINGS)


def tune_for(device_type: str, enabled: bool) -> bool:
    """`keep_freed_memory()` for a CPU run with `train.cpu_malloc_reuse`; False where nothing changed."""
    return enabled and device_type == "cpu" and keep_freed_memory()
