"""Build the models' C kernels (models/*.c) on first use with the host compiler, into a shared cache.

`Kernels(source, flags, declare)` compiles `source` with `cc -march=<arch> <flags>` (OpenMP on: the kernels
share torch's OpenMP team, the libgomp torch loaded) into `$SPIKINGRESFORMER_CACHE` (else
`~/.cache/spikingresformer`), keyed by the source, compiler, flags (the arch among them) and CPU, so a changed
file or another machine builds anew; the file is written under a temporary name and renamed, so concurrent
builders (DDP ranks) each land a whole file.

The instruction set is the host's (`-march=native`) unless `$DASSDP_KERNEL_ARCH` names a GCC `-march` level,
e.g. `x86-64-v3` (AVX2 and FMA, no AVX-512) or `x86-64` (SSE2): a build for the CPUs of a cluster or CI
runners other than this one, and how the tests run the kernels' non-AVX-512 paths on an AVX-512 machine.
`.library()` returns the loaded ctypes library, or None with `.unavailable_reason()` saying why (no
compiler, a compile error).

`with cpu_kernels(False):` builds a model for another device (`models.build_model(cfg, device)` does so):
its LIF neurons and `sparse_conv: auto` convolutions are set up without the CPU kernels, which are then
neither compiled nor asked for (moved to a CPU later, such a model runs spikingjelly's op and dense
convolutions).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_FLAGS = ["-O3", "-std=gnu11", "-fopenmp", "-fPIC", "-shared"]
ARCH_ENV = "DASSDP_KERNEL_ARCH"
_wanted = [True]


def wanted() -> bool:
    """Whether models built now should use the CPU kernels (False inside `cpu_kernels(False)`)."""
    return _wanted[-1]


@contextmanager
def cpu_kernels(on: bool) -> Iterator[None]:
    """Models built inside use the CPU kernels only if `on` (see the module docstring)."""
    _wanted.append(bool(on))
    try:
        yield
    finally:
        _wanted.pop()


def kernel_arch(arch: str | None = None) -> str:
    """The `-march` level the kernels are built for: `arch`, else `$DASSDP_KERNEL_ARCH`, else "native"."""
    value = (arch or os.environ.get(ARCH_ENV) or "native").strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value):  # it goes onto the compiler's command line
        raise ValueError(f"{ARCH_ENV}={value!r} is not a -march level: use e.g. native, x86-64-v3 or x86-64")
    return value


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where it is not readable)."""
    line = _cpu_id()
    return frozenset(line.split(":", 1)[1].split()) if ":" in line else frozenset()


def vector_isa(flags: frozenset[str] | None = None) -> str:
    """The widest x86 vector extension of this CPU, as figures name it: AVX-512 (+BF16/AMX), AVX2 or older."""
    f = cpu_flags() if flags is None else flags
    if "avx512f" in f:
        extra = [name for flag, name in (("avx512_bf16", "BF16"), ("amx_bf16", "AMX")) if flag in f]
        return "AVX-512" + (" (" + ", ".join(extra) + ")" if extra else "")
    if "avx2" in f:
        return "AVX2"
    return "AVX" if "avx" in f else (platform.machine() or "unknown")


def cache_dir() -> Path:
    """Where built kernels (and per-machine verdicts such as launch.precision's) are kept."""
    root = os.environ.get("SPIKINGRESFORMER_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spikingresformer"


class Kernels:
    """One C file's compiled kernels, built once per process (thread-safe) for `arch` (None: `kernel_arch()`
    when first built); `declare(lib)` sets the ctypes prototypes."""

    def __init__(self, source: Path, flags: list[str], declare: Callable[[ctypes.CDLL], None],
                 arch: str | None = None):
        self.source, self.extra_flags, self._declare = Path(source), list(flags), declare
        self.arch = arch
        self.path: Path | None = None  # the built shared library, once built
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def _build(self) -> ctypes.CDLL:
        import torch  # loads torch's libgomp first: the kernels' OpenMP calls then bind to it

        del torch
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise RuntimeError("no C compiler found (install gcc, or set CC)")
        flags = self.flags()
        key = hashlib.sha256(b"\0".join([self.source.read_bytes(), cc.encode(), " ".join(flags).encode(),
                                          platform.machine().encode(), _cpu_id().encode()])).hexdigest()[:16]
        out = cache_dir() / f"{self.source.stem}-{key}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            try:
                r = subprocess.run([cc, *flags, str(self.source), "-o", tmp], capture_output=True, text=True)
                if r.returncode:
                    march = next(f for f in flags if f.startswith("-march="))
                    raise RuntimeError(f"{cc} {march} failed on {self.source}: {r.stderr.strip()[-2000:]}")
                os.replace(tmp, out)  # atomic: concurrent builders each land a whole file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(out))
        self._declare(lib)
        self.path = out
        return lib

    def flags(self) -> list[str]:
        """The compiler flags of this build (the `-march` level resolved now)."""
        return [*BASE_FLAGS, f"-march={kernel_arch(self.arch)}", *self.extra_flags]

    def library(self) -> ctypes.CDLL | None:
        """The compiled kernels, built on first call; None if they cannot be built."""
        with self._lock:
            if self._lib is None and self._error is None:
                try:
                    self._lib = self._build()
                except (OSError, RuntimeError, ValueError) as e:
                    self._error = str(e)
            return self._lib

    def unavailable_reason(self) -> str | None:
        """Why the kernels cannot be used here (None when they can)."""
        self.library()
        return self._error


def check(rc: int, what: str) -> None:
    """A kernel's return code: 0, or -1 when it could not allocate its scratch memory."""
    if rc != 0:
        raise MemoryError(f"{what}: the kernel could not allocate its scratch memory")
