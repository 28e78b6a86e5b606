"""Fused CPU multi-step LIF kernels (numba): one memory pass forward, one backward.

The paper's neuron (tau 2, decay_input, hard reset to 0, detached reset, ATan surrogate) over a flat
time-major [T, N] tensor, as the custom ops `spikingresformer::lif_forward` / `lif_backward` (with autograd;
opaque to torch.compile, so compiled CPU graphs call them too). The arithmetic is spikingjelly 2.0's CPU op,
operation for operation and in the same float32 order, so spikes, final membrane and the gradients of the
input and of a carried-over membrane are bit-identical to it (a test checks fp32, bf16 and fp16); only the
memory traffic changes: spikingjelly's op makes about five passes per time step forward and ten backward,
these kernels one. The backward recomputes the membrane trace block by block from the saved input instead
of keeping a [T, N] float32 copy.

bfloat16 tensors are read and written as their 16-bit patterns (exact widening, round-to-nearest-even
narrowing as torch does), so autocast costs no conversion passes; other dtypes are converted around the
float32 kernel. The kernels release the GIL and run on a small thread pool, one slice of N per thread
(numba's own parallel layer is avoided: FFCV's loader threads use it concurrently, which its default
layer does not allow). CPU only; on CUDA the model uses spikingjelly's Triton kernels instead.
"""
from __future__ import annotations

import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numba
import numpy as np
import torch
from numba.core import types
from numba.extending import intrinsic, overload

_BF16_ONE = np.uint16(0x3F80)
_EMPTY = torch.empty(0, dtype=torch.float32)  # 'no tensor': zeros without allocating N of them
_MIN_PARALLEL = 1 << 16  # elements below which one thread is faster than handing slices out


@intrinsic
def _bits_to_f32(typingctx, u):
    """Reinterpret a uint32 as float32 (no conversion)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.uint32), codegen


@intrinsic
def _f32_to_bits(typingctx, f):
    """Reinterpret a float32 as uint32 (no conversion)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))
    return types.uint32(types.float32), codegen


def _load(a, i):  # pragma: no cover - replaced by the overload inside kernels
    raise NotImplementedError


@overload(_load, inline="always")
def _load_impl(a, i):
    if a.dtype == types.float32:
        return lambda a, i: a[i]
    if a.dtype == types.uint16:  # bfloat16 bits -> float32, exact
        return lambda a, i: _bits_to_f32(np.uint32(a[i]) << np.uint32(16))
    return None


def _store(a, i, f):  # pragma: no cover - replaced by the overload inside kernels
    raise NotImplementedError


@overload(_store, inline="always")
def _store_impl(a, i, f):
    if a.dtype == types.float32:
        def store_f32(a, i, f):
            a[i] = f
        return store_f32
    if a.dtype == types.uint16:  # float32 -> bfloat16 bits, round to nearest even (torch's rule)
        def store_bf16(a, i, f):
            if f != f:
                a[i] = np.uint16(0x7FC0)
            else:
                u = _f32_to_bits(f)
                a[i] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
                                 >> np.uint32(16))
        return store_bf16
    return None


_JIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)


@numba.njit(inline="always", **_JIT)
def _charge(x, v, tau):  # pragma: no cover - numba
    """H = V + (X - V) / tau, in spikingjelly's operation order (forward and backward's recompute)."""
    return (x - v) / tau + v


@numba.njit(**_JIT)
def _forward(x, v0, spikes, v_out, lo, hi, tau, threshold, one):  # pragma: no cover - numba
    n = hi - lo
    zero = one - one
    vo = v_out[lo:hi]
    if v0.shape[0] == 0:  # no carried-over membrane: start from the reset value 0
        vo[:] = np.float32(0.0)
    else:
        vo[:] = v0[lo:hi]
    for t in range(x.shape[0]):
        xt = x[t, lo:hi]
        st = spikes[t, lo:hi]
        for i in range(n):
            v = vo[i]
            h = _charge(_load(xt, i), v, tau)
            fired = h >= threshold
            st[i] = one if fired else zero
            vo[i] = np.float32(0.0) if fired else h  # hard reset to 0
    return 0


_BLOCK = 512  # elements per recompute block: T x 512 float32 stay in L1/L2


@numba.njit(**_JIT)
def _backward(x, v0, g, g_v, gx, gv0, lo, hi, tau, threshold, k, scale, use_scale):  # pragma: no cover
    """Recompute H block by block from (x, v0) (no [T, N] float32 tensor is kept from forward), then the
    reverse-time gradient sweep over the same block; the gradient reaching the initial membrane goes to
    gv0 (unless that is the empty 'not needed' marker)."""
    T = x.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    hs = np.empty((T, _BLOCK), dtype=np.float32)
    vv = np.empty(_BLOCK, dtype=np.float32)
    for b0 in range(lo, hi, _BLOCK):
        b1 = min(hi, b0 + _BLOCK)
        m = b1 - b0
        if v0.shape[0] == 0:
            vv[:m] = zero
        else:
            vv[:m] = v0[b0:b1]
        for t in range(T):
            xt = x[t, b0:b1]
            ht = hs[t]
            for i in range(m):
                h = _charge(_load(xt, i), vv[i], tau)
                ht[i] = h
                vv[i] = zero if h >= threshold else h
        if g_v.shape[0] == 0:  # now the gradient carried back through V
            vv[:m] = zero
        else:
            vv[:m] = g_v[b0:b1]
        for r in range(T):  # reverse time; a negative-step range here defeats LLVM's vectorizer
            t = T - 1 - r
            ht = hs[t]
            gt = g[t, b0:b1]
            gxt = gx[t, b0:b1]
            for i in range(m):
                h = ht[i]
                z = (h - threshold) * k
                sg = one / (z * z + one)  # ATan surrogate (alpha/2) / (1 + (pi/2 alpha (h - thr))^2)
                if use_scale:
                    sg = sg * scale
                c = vv[i]
                gh = sg * _load(gt, i) + (zero if h >= threshold else c)  # detached reset
                q = gh / tau
                _store(gxt, i, q)
                vv[i] = gh - q
        if gv0.shape[0] != 0:
            gv0[b0:b1] = vv[:m]
    return 0


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _slices(n: int, total: int, align: int = 16) -> list[tuple[int, int]]:
    """range(n) cut into one slice per torch thread (one slice if `total` work items are few); slice
    starts are multiples of `align` (whole cache lines for 16 float32)."""
    parts = torch.get_num_threads() if total >= _MIN_PARALLEL else 1
    step = -(-n // max(parts, 1))
    step = max(align, -(-step // align) * align)  # (and no zero step for n = 0)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)] or [(0, 0)]


def _parallel(calls: list) -> None:
    """Run the zero-argument callables `calls` (GIL-free kernels) at once: the first on this thread, the
    others on a small pool; returns when all are done and re-raises the first error."""
    if len(calls) == 1:
        calls[0]()
        return
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < len(calls) - 1:
            _pool = ThreadPoolExecutor(len(calls) - 1, thread_name_prefix="lif-cpu")
    futures = [_pool.submit(c) for c in calls[1:]]
    calls[0]()
    for f in futures:
        f.result()


def _run(kernel, n_head: int, n: int, total: int, *args) -> None:
    """Call `kernel(*head, lo, hi, *tail)` over slices of range(n), one per torch thread."""
    head, tail = args[:n_head], args[n_head:]
    _parallel([(lambda lo=lo, hi=hi: kernel(*head, lo, hi, *tail)) for lo, hi in _slices(n, total)])


def _np(t: torch.Tensor) -> np.ndarray:
    return (t.view(torch.uint16) if t.dtype == torch.bfloat16 else t).numpy()


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.bfloat16) else torch.float32


def _f32_or_empty(t: torch.Tensor | None) -> torch.Tensor:
    """A contiguous float32 [N] state/gradient, or the empty 'none' marker the kernels read as zeros."""
    return _EMPTY if t is None else t.float().contiguous()


@torch.library.custom_op("spikingresformer::lif_forward", mutates_args=(), device_types="cpu")
def lif_forward(x: torch.Tensor, v: Optional[torch.Tensor], tau: float, threshold: float,
                alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF on x [T, N] (CPU; float32 and bfloat16 natively, other dtypes converted) from the
    float32 membrane v [N] (None: start at 0); returns (spikes [T, N] in x's dtype, final v [N] float32).
    `alpha` (the ATan surrogate's) is only used by the backward. An opaque op to torch.compile, so compiled
    graphs use this kernel too."""
    xk = x.to(_kernel_dtype(x.dtype)).contiguous()
    v0 = _f32_or_empty(v)
    T, N = xk.shape
    spikes = torch.empty_like(xk, memory_format=torch.contiguous_format)
    v_out = torch.empty(N, dtype=torch.float32)
    one = _BF16_ONE if xk.dtype == torch.bfloat16 else np.float32(1.0)
    _run(_forward, 4, N, T * N, _np(xk), _np(v0), _np(spikes), _np(v_out),
         np.float32(tau), np.float32(threshold), one)
    return spikes.to(x.dtype), v_out


@lif_forward.register_fake
def _(x, v, tau, threshold, alpha):
    spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
    return spikes, x.new_empty(x.shape[1:], dtype=torch.float32)


@torch.library.custom_op("spikingresformer::lif_backward", mutates_args=(), device_types="cpu")
def lif_backward(x: torch.Tensor, v: Optional[torch.Tensor], g_spikes: Optional[torch.Tensor],
                 g_v: Optional[torch.Tensor], tau: float, threshold: float, alpha: float,
                 v_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `lif_forward` for x [T, N] and, if `v_grad`, for the initial membrane v [N] (else an
    empty tensor). The membrane trace is recomputed from (x, v), so the forward keeps no [T, N] float32
    tensor; g_spikes / g_v may be None (zero)."""
    kdt = _kernel_dtype(x.dtype)
    xk = x.to(kdt).contiguous()
    T, N = xk.shape
    g = torch.zeros((T, N), dtype=kdt) if g_spikes is None else g_spikes.to(kdt).contiguous()
    v0 = _f32_or_empty(v)
    gv = _f32_or_empty(g_v)
    gx = torch.empty((T, N), dtype=kdt)
    gv0 = torch.empty(N if v_grad else 0, dtype=torch.float32)
    _run(_backward, 6, N, T * N, _np(xk), _np(v0), _np(g), _np(gv), _np(gx), _np(gv0),
         np.float32(tau), np.float32(threshold), np.float32(math.pi / 2 * alpha), np.float32(alpha / 2),
         alpha != 2.0)
    return gx.to(x.dtype), gv0


@lif_backward.register_fake
def _(x, v, g_spikes, g_v, tau, threshold, alpha, v_grad):
    gx = torch.empty_like(x, memory_format=torch.contiguous_format)
    return gx, x.new_empty(x.shape[1] if v_grad else 0, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, v, tau, threshold, alpha = inputs
    ctx.save_for_backward(x, v)
    ctx.consts = (tau, threshold, alpha)
    ctx.set_materialize_grads(False)


def _lif_grad(ctx, g_spikes, g_v):
    x, v = ctx.saved_tensors
    v_grad = ctx.needs_input_grad[1]  # a carried-over membrane that is part of the graph (never for None)
    gx, gv0 = lif_backward(x, v, g_spikes, g_v, *ctx.consts, v_grad)
    return gx, (gv0 if v_grad else None), None, None, None


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
