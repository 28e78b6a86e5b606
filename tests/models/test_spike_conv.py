"""The event-driven convolution: equal to the dense one (values, both gradients), the density switch, the
model switch, and a clear fallback when the kernels cannot be built."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models
from models import spike_conv
from models.cbuild import Kernels
from models.spike_conv import spike_conv as sconv
from models.spike_conv import spike_conv_weight_grad

ALWAYS = 1.0  # a density limit every input meets: the event-driven path runs


@pytest.fixture(autouse=True)
def _kernels_built():
    """Every comparison here must run the compiled kernels, not the dense fallback (a compiler is part of
    the project's setup: make setup installs gcc)."""
    assert spike_conv.unavailable_reason() is None, spike_conv.unavailable_reason()


def _spikes(shape, density, dtype, values=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g) < density).float()  # [N, C, H, W]
    if values:  # not only spikes: the kernels must use the values, not assume 1 (zeros stay +0.0: a -0.0
        # is a nonzero bit pattern, listed like a spike, and would leave no block of 16 zeros to skip)
        x = torch.where(x != 0, torch.randn(shape, generator=g), 0.0)
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _dense_grads(x, w, gy, stride, pad, groups):
    return torch.ops.aten.convolution_backward(gy.double(), x.double(), w.double(), None, [stride] * 2,
                                               [pad] * 2, [1, 1], False, [0, 0], groups,
                                               [True, True, False])[:2]


# (N, Cin, H, Cout, k, stride, pad, groups): the model's kinds (1x1, grouped 3x3 with 64-wide groups, the
# strided patch and downsampling convolutions) plus odd sizes that take the generic (not 64-wide) path
# (N, Cin, H, Cout, k, stride, pad, groups): output passes of 64 (grouped), 128, 256 + 192 and 256 + 64
# channels, and the generic path (32, 24, 5 per group, 64 + 8)
SHAPES = [(3, 128, 6, 128, 3, 1, 1, 2), (2, 64, 5, 128, 1, 1, 0, 1), (2, 32, 4, 448, 1, 1, 0, 1),
          (2, 24, 5, 320, 3, 1, 1, 1), (2, 16, 8, 32, 4, 4, 0, 1), (3, 16, 9, 24, 3, 2, 1, 1),
          (2, 12, 7, 20, 3, 1, 1, 4), (1, 8, 4, 72, 2, 2, 0, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_weight_gradient_equal_dense_convolution(shape, dtype):
    N, cin, H, cout, k, s, p, g = shape
    x = _spikes((N, cin, H, H), 0.1, dtype, values=True)
    w = (torch.randn(cout, cin // g, k, k, generator=torch.Generator().manual_seed(1)) * 0.1).to(dtype)
    ref = F.conv2d(x.double(), w.double(), None, s, p, 1, g)  # [N, Cout, Ho, Wo]
    y = sconv(x, w, s, p, g, ALWAYS)
    assert y.dtype == dtype and y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    gw = spike_conv_weight_grad(x, gy, w, s, p, g, ALWAYS)
    _, gw_ref = _dense_grads(x, w, gy, s, p, g)
    assert gw.dtype == dtype and gw.shape == w.shape
    # float32: summation order only; bfloat16: one rounding of the float32 sum (8 mantissa bits)
    tol = 1e-5 if dtype == torch.float32 else 8e-3
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
    torch.testing.assert_close(gw.double(), gw_ref, rtol=tol, atol=tol * float(gw_ref.abs().max()))


def test_autograd_gives_the_dense_gradients_for_input_and_weight():
    x = _spikes((2, 128, 5, 5), 0.08, torch.float32).requires_grad_()
    w = (torch.randn(128, 64, 3, 3) * 0.1).requires_grad_()
    y = sconv(x, w, 1, 1, 2, ALWAYS)
    gy = torch.randn_like(y)
    y.backward(gy)
    gx_ref, gw_ref = _dense_grads(x.detach(), w.detach(), gy, 1, 1, 2)
    torch.testing.assert_close(x.grad.double(), gx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), gw_ref, rtol=1e-5, atol=1e-5)


def test_all_zero_input_and_nonzero_sign_patterns():
    w = torch.randn(64, 64, 1, 1)
    y = sconv(torch.zeros(2, 64, 3, 3).contiguous(memory_format=torch.channels_last), w, 1, 0, 1, ALWAYS)
    assert torch.equal(y, torch.zeros_like(y))
    x = torch.zeros(1, 64, 2, 2)
    x[0, 3, 1, 1], x[0, 5, 0, 0] = -0.0, -2.5  # -0.0 is a nonzero bit pattern: listed, contributes 0
    x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(sconv(x, w, 1, 0, 1, ALWAYS), F.conv2d(x, w))


def test_dense_above_the_limit_and_density_is_sampled_per_image():
    x = _spikes((16, 64, 4, 4), 0.5, torch.float32)
    w = torch.randn(64, 64, 1, 1)
    assert abs(spike_conv.density(x) - float((x != 0).float().mean())) < 1e-6
    assert abs(spike_conv.density(x, every=8) - float((x[::8] != 0).float().mean())) < 1e-6
    # above the limit: the dense convolution's own result, bit for bit
    dense = F.conv2d(x, w).contiguous(memory_format=torch.channels_last)
    assert torch.equal(sconv(x, w, 1, 0, 1, 0.2), dense)


@pytest.mark.parametrize("amp", [False, True])
def test_model_with_sparse_conv_equals_dense_model(amp):
    """Logits and every parameter gradient of a training step agree with the dense model (all spike
    convolutions forced event-driven); the stem stays dense."""
    def step(sparse: bool):
        torch.manual_seed(0)
        m = models.create("spikingresformer_tiny", T=2, img_size=16, sparse_conv=sparse)
        m = m.to(memory_format=torch.channels_last).train()
        if sparse:
            m.set_sparse_conv(True, {torch.float32: ALWAYS, torch.bfloat16: ALWAYS}, min_group_out=1)
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = m(x)  # [T, B, K]
        F.cross_entropy(out.float().mean(0), torch.arange(4)).backward()
        return m, out.float(), {k: p.grad for k, p in m.named_parameters()}

    dense_m, dense_out, dense_g = step(False)
    sparse_m, sparse_out, sparse_g = step(True)
    assert sparse_m.prologue[0].sparse_limits is None and sparse_m.layers[0][1].up[1].sparse_limits
    assert dense_m.layers[0][1].up[1].sparse_limits is None
    if not amp:  # float32: equal up to summation order
        torch.testing.assert_close(sparse_out, dense_out, rtol=1e-4, atol=1e-5)
        for k, g in dense_g.items():
            torch.testing.assert_close(sparse_g[k], g, rtol=0, atol=1e-3 * float(g.abs().max()) + 1e-9, msg=k)
    else:  # bf16: a spike may flip where a membrane sits within rounding of the threshold; compare loosely
        assert (sparse_out - dense_out).abs().mean() < 0.05 * dense_out.abs().mean()


def test_model_config_switch_reaches_the_convolutions():
    """On for every spike convolution with >= MIN_GROUP_OUT outputs per group; the stem and the narrow
    groups (where the kernels lose) stay dense."""
    m = models.build_model(models.ModelConfig(name="spikingresformer_tiny", num_classes=10, img_size=16,
                                              in_channels=3, sparse_conv=True))
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs[0] is m.prologue[0] and convs[0].sparse_limits is None
    for c in convs[1:]:
        wide = c.out_channels // c.groups >= spike_conv.MIN_GROUP_OUT
        assert c.sparse_limits == (spike_conv.DENSITY_LIMITS if wide else None)
    on = sum(c.sparse_limits is not None for c in convs)
    assert on >= 4 and len(convs) - on >= 4


def _fresh_kernels(monkeypatch):
    """spike_conv as if nothing had been built in this process yet."""
    monkeypatch.setattr(spike_conv, "_kernels", Kernels(spike_conv._kernels.source, [], spike_conv._declare))


def test_no_compiler_warns_once_and_stays_dense(monkeypatch, tmp_path):
    _fresh_kernels(monkeypatch)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SPIKINGRESFORMER_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="sparse_conv: the event-driven kernels cannot be built"):
        m = models.create("spikingresformer_tiny", T=2, img_size=16, sparse_conv=True)
    assert all(getattr(c, "sparse_limits", None) is None for c in m.modules())
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 2, 10)


def test_kernels_build_into_the_cache_once(monkeypatch, tmp_path):
    _fresh_kernels(monkeypatch)
    monkeypatch.setenv("SPIKINGRESFORMER_CACHE", str(tmp_path))
    assert spike_conv.library() is not None and spike_conv.unavailable_reason() is None
    built = list(tmp_path.glob("spike_conv-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob("*.so.*")) and not list(tmp_path.glob("tmp*"))
