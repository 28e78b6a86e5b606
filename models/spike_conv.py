"""Event-driven CPU convolution for spike inputs: work proportional to the number of spikes.

Every convolution after the stem sees spikes (0/1, a few percent of them 1: 3-14 % in SpikingResformer at
initialisation). A dense convolution multiplies every zero; this one visits, per output pixel, only the
nonzero inputs under its window and adds `value * weight row` for each, so the forward and the weight
gradient cost about density x the dense work. The input gradient (dense in the output gradient) stays
oneDNN's. Any input is computed correctly (the values are used, not assumed to be 1); above a density
limit (`DENSITY_LIMITS`), where dense GEMMs win, the ops call the dense convolution instead.

Layout: channels-last [N, C, H, W] (NHWC in memory); any stride, padding and groups, dilation 1.
Exposed as the custom ops `spikingresformer::spike_conv` (with autograd) and `spike_conv_weight_grad`,
opaque to torch.compile. float32 and bfloat16 (bf16 read as its 16-bit patterns, float32 accumulation,
outputs rounded as torch rounds); the results equal the dense convolution's up to summation order.

The kernels (models/spike_conv.c, plain C with OpenMP: they run in torch's own thread team) are compiled on
first use with the host C compiler (models/cbuild.py: `-O3 -march=native`, or `$DASSDP_KERNEL_ARCH`; cached
by source, compiler, flags and CPU in `$SPIKINGRESFORMER_CACHE`, else `~/.cache/spikingresformer`). With
AVX-512 the input lists are gathered with compress instructions, elsewhere by a portable loop; both are
tested (tests/models/test_kernels_isa.py). CPU only; the model uses them for CPU tensors when `sparse_conv`
is on.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from models.cbuild import Kernels, check
from models.lif_cpu import _kernel_dtype, tag_compile_caches

# Above these fractions of nonzero inputs the dense convolution is used: where the event-driven kernel
# stops winning on this project's CPU (AVX-512, oneDNN) for SpikingResformer's shapes; bfloat16 dense
# convolutions run about twice as fast as float32 ones, so their break-even comes earlier.
DENSITY_LIMITS = {torch.float32: 0.15, torch.bfloat16: 0.10}
# Fewer output channels per group than this and the per-entry overhead outweighs the skipped work (the
# kernels' narrowest fast pass holds 64 output channels in registers): the model keeps those dense
# (measured: spikingresformer_demo, groups of 16, trained 30 % slower with all of them event-driven).
MIN_GROUP_OUT = 64


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.sc_forward.argtypes = [ptr, i32, ptr, ptr, i32] + [i64] * 12
    lib.sc_weight_grad.argtypes = [ptr, i32, ptr, i32, ptr] + [i64] * 12
    lib.sc_forward.restype = lib.sc_weight_grad.restype = i32
    lib.sc_density.argtypes = [ptr, i32, i64, i64, i64]
    lib.sc_density.restype = ctypes.c_double


_kernels = Kernels(Path(__file__).with_name("spike_conv.c"), [], _declare)


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first call; None if they cannot be built (see `unavailable_reason`)."""
    return _kernels.library()


def unavailable_reason() -> str | None:
    """Why the event-driven kernels cannot be used here (None when they can)."""
    return _kernels.unavailable_reason()


def _threads(images: int) -> int:
    """Threads for a kernel call: torch's intra-op thread count (the kernels run in its OpenMP team), at most
    one per image."""
    return max(1, min(torch.get_num_threads(), images))


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def density(x: torch.Tensor, every: int = 1) -> float:
    """Fraction of nonzero entries of x [N, ...], counted in every `every`-th image (what the ops compare
    with their limit, from every 8th image: a cost decision, never a correctness one)."""
    lib = library()
    dense_images = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    if lib is None or x.dtype not in (torch.float32, torch.bfloat16) or not dense_images or x.dim() < 2:
        return float(torch.count_nonzero(x[::every])) / max(x[::every].numel(), 1)
    return lib.sc_density(x.data_ptr(), int(x.dtype == torch.bfloat16), x.shape[0], x[0].numel(), every)


def _sparse_ok(x: torch.Tensor, limit: float) -> bool:
    return x.numel() > 0 and library() is not None and density(x, every=8) <= limit


def _dense_grads(grad_y, x, weight, stride: int, padding: int, groups: int, mask: list[bool]):
    """oneDNN's (input, weight) gradients of the dense convolution, those asked for in `mask`."""
    return torch.ops.aten.convolution_backward(grad_y, x, weight, None, [stride] * 2, [padding] * 2, [1, 1],
                                               False, [0, 0], groups, [*mask, False])[:2]


def _kernel_inputs(x: torch.Tensor, weight: torch.Tensor, Ho: int, Wo: int, stride: int, padding: int,
                   groups: int):
    """(kernel dtype, x in it as channels-last, bf16 flag, the geometry arguments of both kernels)."""
    kdt = _kernel_dtype(x.dtype)
    _, _, H, W = x.shape
    cout, cin_g, k, _ = weight.shape
    geo = (H, W, Ho, Wo, k, stride, padding, groups, cin_g, cout // groups)
    return kdt, x.to(kdt).contiguous(memory_format=torch.channels_last), int(kdt == torch.bfloat16), geo


@torch.library.custom_op("spikingresformer::spike_conv", mutates_args=(), device_types="cpu")
def spike_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, groups: int,
               limit: float) -> torch.Tensor:
    """conv2d(x, weight, stride, padding, groups) for x [N, Cin, H, W] and weight [Cout, Cin/G, k, k] of one
    dtype, event-driven when at most `limit` of x is nonzero (dense otherwise); channels-last output."""
    if not _sparse_ok(x, limit):
        return torch.nn.functional.conv2d(x, weight, None, stride, padding, 1, groups).contiguous(
            memory_format=torch.channels_last)
    lib = library()
    N, _, H, W = x.shape
    cout, cin_g, k, _ = weight.shape
    Ho, Wo = _out_size(H, k, stride, padding), _out_size(W, k, stride, padding)
    kdt, xk, bf, geo = _kernel_inputs(x, weight, Ho, Wo, stride, padding, groups)
    wr = weight.float().reshape(groups, cout // groups, cin_g, k, k).permute(0, 3, 4, 2, 1).contiguous()
    y = torch.empty((N, cout, Ho, Wo), dtype=kdt, memory_format=torch.channels_last)
    check(lib.sc_forward(xk.data_ptr(), bf, wr.data_ptr(), y.data_ptr(), bf, N, _threads(N), *geo),
          "spike_conv")
    return y.to(x.dtype)


@spike_conv.register_fake
def _(x, weight, stride, padding, groups, limit):
    N, _, H, W = x.shape
    cout, _, k, _ = weight.shape
    shape = (N, cout, _out_size(H, k, stride, padding), _out_size(W, k, stride, padding))
    return x.new_empty(shape).contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("spikingresformer::spike_conv_weight_grad", mutates_args=(), device_types="cpu")
def spike_conv_weight_grad(x: torch.Tensor, grad_y: torch.Tensor, weight: torch.Tensor, stride: int,
                           padding: int, groups: int, limit: float) -> torch.Tensor:
    """Gradient of `spike_conv` for its weight (in the weight's dtype and layout), from the spikes x and
    the output gradient; event-driven under the same density rule as the forward."""
    if not _sparse_ok(x, limit):
        return _dense_grads(grad_y, x, weight, stride, padding, groups, [False, True])[1]
    lib = library()
    N = x.shape[0]
    cout, cin_g, k, _ = weight.shape
    kdt, xk, bf, geo = _kernel_inputs(x, weight, *grad_y.shape[2:], stride, padding, groups)
    gk = grad_y.to(kdt).contiguous(memory_format=torch.channels_last)
    threads = _threads(N)
    parts = torch.zeros((threads, groups, k, k, cin_g, cout // groups), dtype=torch.float32)
    check(lib.sc_weight_grad(xk.data_ptr(), bf, gk.data_ptr(), bf, parts.data_ptr(), N, threads, *geo),
          "spike_conv_weight_grad")
    gw = parts.sum(0) if threads > 1 else parts[0]  # [G, k, k, Cin/G, Cout/G]
    gw = gw.permute(0, 4, 3, 1, 2).reshape(cout, cin_g, k, k)
    return torch.empty_like(weight).copy_(gw)


@spike_conv_weight_grad.register_fake
def _(x, grad_y, weight, stride, padding, groups, limit):
    return torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, stride, padding, groups, limit = inputs
    ctx.save_for_backward(x, weight)
    ctx.consts = (stride, padding, groups, limit)


def _spike_conv_grad(ctx, grad_y):
    x, weight = ctx.saved_tensors
    stride, padding, groups, limit = ctx.consts
    gx = gw = None
    if ctx.needs_input_grad[0]:
        gx = _dense_grads(grad_y, x, weight, stride, padding, groups, [True, False])[0]
    if ctx.needs_input_grad[1]:
        gw = spike_conv_weight_grad(x, grad_y, weight, stride, padding, groups, limit)
    return gx, gw, None, None, None, None


spike_conv.register_autograd(_spike_conv_grad, setup_context=_setup_context)
tag_compile_caches(__file__)
