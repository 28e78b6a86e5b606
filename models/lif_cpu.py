"""Fused CPU multi-step LIF kernels (models/lif_cpu.c): one memory pass forward, one backward.

The paper's neuron (tau 2, decay_input, hard reset to 0, detached reset, ATan surrogate) over a flat
time-major [T, N] tensor, as the custom ops `spikingresformer::lif_forward` / `lif_backward` (with autograd;
opaque to torch.compile, so compiled CPU graphs call them too). The arithmetic is spikingjelly 2.0's CPU op,
operation for operation and in the same float32 order (the C file is built without fused multiply-adds), so
spikes, final membrane and the gradients of the input and of a carried-over membrane are bit-identical to
it (a test checks fp32, bf16 and fp16); only the memory traffic changes: spikingjelly's op makes about five
passes per time step forward and ten backward, these kernels one. The backward recomputes the membrane
trace block by block from the saved input instead of keeping a [T, N] float32 copy.

bfloat16 tensors are read and written as their 16-bit patterns (exact widening, round-to-nearest-even
narrowing as torch does), so autocast costs no conversion passes; other dtypes are converted around the
float32 kernel. The kernels release the GIL and run in torch's OpenMP team (the libgomp torch loaded), so
they never compete with torch's spinning worker threads for the cores. They are plain C (no intrinsics:
the compiler vectorizes for whatever `-march` level models/cbuild.py builds for, with the same bits on every
level; tests/models/test_kernels_isa.py checks AVX2 and SSE2 builds), compiled on first use; where no C
compiler is available the neurons use spikingjelly's CPU op instead (models/neurons.py warns once). CPU
only; on CUDA the model uses spikingjelly's Triton kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
from pathlib import Path
from typing import Optional

import torch

from models.cbuild import Kernels, check


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.lif_forward.argtypes = [ptr, i32, ptr, ptr, ptr, i64, i64, f32, f32, i32]
    lib.lif_forward.restype = None
    lib.lif_backward.argtypes = [ptr, i32, ptr, ptr, ptr, ptr, ptr, i64, i64, f32, f32, f32, f32, i32]
    lib.lif_backward.restype = i32


_FLAGS = ["-ffp-contract=off"]  # no fused multiply-adds: every product rounded as in spikingjelly's op
_kernels = Kernels(Path(__file__).with_name("lif_cpu.c"), _FLAGS, _declare)


def library() -> ctypes.CDLL | None:
    """The compiled LIF kernels, built on first call; None if they cannot be built (`unavailable_reason`)."""
    return _kernels.library()


def unavailable_reason() -> str | None:
    """Why the LIF kernels cannot be used here (None when they can)."""
    return _kernels.unavailable_reason()


def _lib() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(f"lif_cpu: the C kernels cannot be built here ({unavailable_reason()}); "
                           "install gcc, or use spikingjelly's op (models.neurons.LIF does so by itself)")
    return lib


def _ptr(t: torch.Tensor | None) -> int | None:
    """The tensor's address, or NULL for None (the kernels read a NULL state or gradient as zeros)."""
    return None if t is None else t.data_ptr()


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.bfloat16) else torch.float32


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """A contiguous float32 [N] state/gradient (None stays None: zeros)."""
    return None if t is None else t.float().contiguous()


@torch.library.custom_op("spikingresformer::lif_forward", mutates_args=(), device_types="cpu")
def lif_forward(x: torch.Tensor, v: Optional[torch.Tensor], tau: float, threshold: float, alpha: float,
                keep_v: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF on x [T, N] (CPU; float32 and bfloat16 natively, other dtypes converted) from the
    float32 membrane v [N] (None: start at 0); returns (spikes [T, N] in x's dtype, final v [N] float32,
    or an empty tensor unless `keep_v`: then no [N] membrane is allocated, nor, under autograd, a zero
    gradient for it). `alpha` (the ATan surrogate's) is only used by the backward. An opaque op to
    torch.compile, so compiled graphs use this kernel too."""
    lib = _lib()
    xk = x.to(_kernel_dtype(x.dtype)).contiguous()
    v0 = _f32(v)
    T, N = xk.shape
    spikes = torch.empty_like(xk, memory_format=torch.contiguous_format)
    v_out = torch.empty(N if keep_v else 0, dtype=torch.float32)
    lib.lif_forward(xk.data_ptr(), int(xk.dtype == torch.bfloat16), _ptr(v0), spikes.data_ptr(),
                    v_out.data_ptr() if keep_v else None, T, N, tau, threshold, torch.get_num_threads())
    return spikes.to(x.dtype), v_out


@lif_forward.register_fake
def _(x, v, tau, threshold, alpha, keep_v=True):
    spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
    return spikes, x.new_empty(x.shape[1] if keep_v else 0, dtype=torch.float32)


@torch.library.custom_op("spikingresformer::lif_backward", mutates_args=(), device_types="cpu")
def lif_backward(x: torch.Tensor, v: Optional[torch.Tensor], g_spikes: Optional[torch.Tensor],
                 g_v: Optional[torch.Tensor], tau: float, threshold: float, alpha: float,
                 v_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `lif_forward` for x [T, N] and, if `v_grad`, for the initial membrane v [N] (else an
    empty tensor). The membrane trace is recomputed from (x, v), so the forward keeps no [T, N] float32
    tensor; g_spikes / g_v may be None (zero)."""
    lib = _lib()
    kdt = _kernel_dtype(x.dtype)
    xk = x.to(kdt).contiguous()
    T, N = xk.shape
    g = torch.zeros((T, N), dtype=kdt) if g_spikes is None else g_spikes.to(kdt).contiguous()
    v0, gv = _f32(v), _f32(g_v)  # (kept alive across the call)
    gx = torch.empty((T, N), dtype=kdt)
    gv0 = torch.empty(N if v_grad else 0, dtype=torch.float32)
    check(lib.lif_backward(xk.data_ptr(), int(kdt == torch.bfloat16), _ptr(v0), g.data_ptr(), _ptr(gv),
                           gx.data_ptr(), gv0.data_ptr() if v_grad else None, T, N, tau, threshold,
                           math.pi / 2 * alpha, alpha / 2, torch.get_num_threads()), "lif_backward")
    return gx.to(x.dtype), gv0


@lif_backward.register_fake
def _(x, v, g_spikes, g_v, tau, threshold, alpha, v_grad):
    gx = torch.empty_like(x, memory_format=torch.contiguous_format)
    return gx, x.new_empty(x.shape[1] if v_grad else 0, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, v, tau, threshold, alpha, *_ = inputs
    ctx.save_for_backward(x, v)
    ctx.consts = (tau, threshold, alpha)
    ctx.set_materialize_grads(False)


def _lif_grad(ctx, g_spikes, g_v):
    x, v = ctx.saved_tensors
    v_grad = ctx.needs_input_grad[1]  # a carried-over membrane that is part of the graph (never for None)
    if g_v is not None and g_v.numel() == 0:  # no final membrane was kept (keep_v=False)
        g_v = None
    gx, gv0 = lif_backward(x, v, g_spikes, g_v, *ctx.consts, v_grad)
    return gx, (gv0 if v_grad else None), None, None, None, None


lif_forward.register_autograd(_lif_grad, setup_context=_setup_context)


def tag_compile_caches(path: str | Path) -> None:
    """Put the hash of the kernel file `path` into torch.compile's cache keys (`cache_key_tag`).

    The compile caches key a graph by the ops it calls, not by their code: a backward graph cached with an
    earlier version of these ops would call them with their old arguments and fail (or worse, run the old
    formula's arguments on the new op). With the hash in the key, any change to the file is a cache miss.
    """
    path = Path(path)
    tag = f"spikingresformer.{path.stem}:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    config = torch.compiler.config
    if tag not in config.cache_key_tag.split():
        config.cache_key_tag = f"{config.cache_key_tag} {tag}".strip()


tag_compile_caches(__file__)
