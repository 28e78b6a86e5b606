"""LIF and PLIF neurons for SpikingResformer, on spikingjelly 2.0's multi-step kernels.

Both take a time-major tensor [T, B, ...] in any memory layout and return spikes of the same shape,
dtype and layout. Inside, the tensor is viewed as [T, N] in its *physical* order (channels-last stays
channels-last, no copy), and the membrane state is kept in float32 even under autocast. On CPU the LIF runs
the fused C kernel of models/lif_cpu.py (bit-identical to spikingjelly's CPU op, one memory pass each way;
spikingjelly's op itself where no C compiler is available);
elsewhere, and for PLIF, spikingjelly's registered multi-step kernels (Triton on CUDA), never its Python
reference loop.
The neuron state is reset by `spikingjelly.activation_based.functional.reset_net(model)`.
"""
from __future__ import annotations

import warnings

import torch
from spikingjelly.activation_based import functional as sjf
from spikingjelly.activation_based import neuron, surrogate

from models import cbuild, lif_cpu
from models.lif_cpu import lif_forward

# The paper's settings: tau 2, decay_input, threshold 1, hard reset to 0, detached reset, ATan(alpha=2).
_COMMON = dict(decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=True, step_mode="m",
               store_v_seq=False)


def _flat_time_major(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """[T, ...] -> [T, N] in memory order; returns the permutation that undoes it (None if contiguous).

    The non-time dims are ordered by stride, so any dense layout (channels-last activations, the DSSA's
    transposed attention map) is flattened as a view, and its gradient comes back without a copy.
    """
    T = x.shape[0]
    if x.is_contiguous():
        return x.reshape(T, -1), None
    dims = sorted(range(1, x.dim()), key=lambda d: -x.stride(d))  # stable: ties keep their order
    perm = (0, *dims)
    return x.permute(perm).reshape(T, -1), perm


def _restore(spikes: torch.Tensor, x: torch.Tensor, perm: tuple[int, ...] | None) -> torch.Tensor:
    if perm is None:
        return spikes.view(x.shape)
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return spikes.view([x.shape[d] for d in perm]).permute(inverse)  # x's shape, x's strides


def _use_cpu_kernel(x: torch.Tensor) -> bool:
    """CPU float tensors take the fused C kernel (an opaque custom op, under torch.compile too)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16)


_warned = False


def _cpu_kernels_built() -> bool:
    """Whether models/lif_cpu.c is built (it is on first call); if it cannot be, warn once: the neurons then
    run spikingjelly's CPU op (same results, several times the memory traffic)."""
    global _warned
    if lif_cpu.library() is not None:
        return True
    if not _warned:
        _warned = True
        warnings.warn(f"LIF: the fused CPU kernels cannot be built ({lif_cpu.unavailable_reason()}); using "
                      "spikingjelly's CPU op instead (same results, slower). Install gcc to get them.",
                      stacklevel=3)
    return False


def _state_dtype(x: torch.Tensor) -> torch.dtype:
    """The membrane's dtype: float32, also under autocast (float64 for a .double() model)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _FlatNeuron:
    """Mixin: run the neuron on a flat float32-state view; subclasses provide `_kernel`."""

    def _stored_v(self, x_flat: torch.Tensor) -> torch.Tensor | None:
        """The carried-over membrane in the state dtype, or None after a reset (start at v_reset)."""
        v = self._memories["v"]
        if isinstance(v, torch.Tensor) and v.shape == x_flat.shape[1:]:
            return v.to(_state_dtype(x_flat))
        return None

    def _initial_v(self, x_flat: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        if v is not None:
            return v
        return torch.full(x_flat.shape[1:], float(self.v_reset), dtype=_state_dtype(x_flat),
                          device=x_flat.device)

    # spikingjelly's semantics: the membrane carries over to the next call until reset_net. False: every call
    # starts at rest (a call is one whole sequence) and the final membrane is not kept.
    carry_state = True

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        flat, perm = _flat_time_major(x_seq)  # [T, N]
        spikes, v = self._kernel(flat, self._stored_v(flat) if self.carry_state else None)  # [T, N], [N]
        if self.carry_state:
            self._memories["v"] = v
        return _restore(spikes, x_seq, perm)


class LIF(_FlatNeuron, neuron.LIFNode):
    """Multi-step LIF neuron with the paper's settings (tau 2, hard reset 0, ATan surrogate)."""

    def __init__(self):
        super().__init__(tau=2.0, surrogate_function=surrogate.ATan(alpha=2.0), **_COMMON)
        # decided here (a plain attribute read under torch.compile); never for a model built for a GPU
        self._cpu_kernel = cbuild.wanted() and _cpu_kernels_built()

    def _kernel(self, x: torch.Tensor, v: torch.Tensor | None):
        paper_lif = self.detach_reset and self.v_reset == 0.0 and self.decay_input
        if self._cpu_kernel and _use_cpu_kernel(x) and paper_lif:
            alpha = self.surrogate_function.alpha
            return lif_forward(x, v, self.tau, self.v_threshold, alpha, self.carry_state)
        s, v, _ = sjf.lif_multi_step(x, self._initial_v(x, v), self.tau, self.decay_input, self.v_threshold,
                                     self.v_reset, self.surrogate_function, self.detach_reset, False)
        return s, v


class PLIF(_FlatNeuron, neuron.ParametricLIFNode):
    """Multi-step parametric LIF (learnable tau per layer, init 2; parameter `w`, tau = 1/sigmoid(w))."""

    def __init__(self):
        super().__init__(init_tau=2.0, surrogate_function=surrogate.ATan(alpha=2.0), **_COMMON)

    def _kernel(self, x: torch.Tensor, v: torch.Tensor | None):
        s, v, _ = sjf.plif_multi_step(x, self._initial_v(x, v), self.w, self.decay_input, self.v_threshold,
                                      self.v_reset, self.surrogate_function, self.detach_reset, False)
        return s, v


NEURONS = {"lif": LIF, "plif": PLIF}
