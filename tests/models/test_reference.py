"""Same weights and input -> same logits and buffers as a plain per-step reference of the official code."""
from __future__ import annotations

import contextlib

import pytest
import torch
from spikingjelly.activation_based.functional import reset_net
from sr_reference import Reference, official_shapes, random_official_state

import models
from models.spikingresformer import ARCHS


def _model(name: str, sd: dict, T: int, img: int, classes: int, channels_last: bool = True):
    m = models.create(name, T=T, img_size=img, num_classes=classes).to(next(iter(sd.values())).dtype)
    models.load_weights(m, sd)
    return m.to(memory_format=torch.channels_last) if channels_last else m


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_state_dict_names_and_shapes_equal_official(name):
    arch = ARCHS[name]
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in models.create(name).state_dict().items()}
    assert ours == official_shapes(arch, arch.num_classes)


@pytest.mark.parametrize("channels_last", [True, False])
def test_eval_logits_match_reference_fp32(channels_last):
    arch, T, img = ARCHS["spikingresformer_tiny"], 3, 16
    sd = random_official_state(arch, 10, seed=1)
    x = torch.randn(3, 3, img, img, generator=torch.Generator().manual_seed(2))
    model = _model("spikingresformer_tiny", sd, T, img, 10, channels_last).eval()
    with torch.no_grad():
        ours = model(x)
        reset_net(model)
        again = model(x)
        ref = Reference(arch, dict(sd), T, img)(x)
    assert ours.shape == (T, 3, 10)
    assert ref.abs().max() > 0.1  # the network is alive: spikes reach the classifier
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, ours, rtol=0, atol=0)  # reset_net restores the state


def test_event_frames_match_reference_fp32():
    arch, T, img = ARCHS["spikingresformer_tiny"], 3, 16
    sd = random_official_state(arch, 10, seed=3)
    x = torch.rand(2, T, 3, img, img, generator=torch.Generator().manual_seed(4)) * 3  # [B, T, C, H, W]
    model = _model("spikingresformer_tiny", sd, T, img, 10).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), Reference(arch, dict(sd), T, img)(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("static", [True, False])
def test_train_mode_matches_reference_including_buffers(static):
    """float64 so that no spike flips on rounding: BN batch stats, first-batch rates, EMA, running stats."""
    arch, T, img = ARCHS["spikingresformer_tiny"], 3, 16
    sd = random_official_state(arch, 10, seed=5, dtype=torch.float64)
    for k in sd:  # a fresh network: rates 0 so the first batch sets them, default BN statistics
        if "firing_rate" in k:
            sd[k] = torch.zeros_like(sd[k])
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    if not static:
        x = x.unsqueeze(1).repeat(1, T, 1, 1, 1) + 0.1 * torch.rand(2, T, 3, img, img, dtype=torch.float64)
    model = _model("spikingresformer_tiny", sd, T, img, 10).train()
    ref = Reference(arch, {k: v.clone() for k, v in sd.items()}, T, img, train=True)
    for _ in range(2):  # second step: EMA of the rates, running statistics again
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-10)
        reset_net(model)
    ours = model.state_dict()
    for k, v in ref.sd.items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-10, msg=k)
    assert ours["layers.0.0.firing_rate_x"].dtype == torch.float64  # follows .double()


@pytest.mark.parametrize("static", [True, False])
def test_train_step_gradients_match_reference(static):
    """float64, train mode: the gradient of every parameter equals the per-step reference's (surrogate
    ATan, detached reset; folded T, broadcast stem, transposed attention and BN over T*B included)."""
    arch, T, img = ARCHS["spikingresformer_tiny"], 3, 16
    sd = random_official_state(arch, 10, seed=8, dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(4, 3, img, img, generator=gen, dtype=torch.float64)
    if not static:
        x = x.unsqueeze(1).repeat(1, T, 1, 1, 1) + 0.2 * torch.rand(4, T, 3, img, img, dtype=torch.float64)
    y = torch.arange(4) % 10
    model = _model("spikingresformer_tiny", sd, T, img, 10).train()
    params = {k: v.clone().requires_grad_() for k, v in sd.items() if k in dict(model.named_parameters())}
    ref = Reference(arch, {**{k: v.clone() for k, v in sd.items()}, **params}, T, img, train=True)
    with _firing_rates(model) as rates:
        torch.nn.functional.cross_entropy(model(x).mean(0), y).backward()
    torch.nn.functional.cross_entropy(ref(x).mean(0), y).backward()
    assert len(rates) == 20 and min(rates) > 0 and max(rates) < 0.9, rates  # every neuron layer fires
    nonzero = 0
    for k, p in model.named_parameters():
        assert p.grad is not None and params[k].grad is not None, k
        torch.testing.assert_close(p.grad, params[k].grad, rtol=1e-7, atol=1e-10, msg=k)
        nonzero += int(p.grad.abs().sum() > 0)
    assert nonzero >= len(params) - 1, "most gradients must be non-zero for the comparison to mean much"


@contextlib.contextmanager
def _firing_rates(model):
    from models.neurons import LIF

    rates: list[float] = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(float(o.detach().float().mean())))
             for m in model.modules() if isinstance(m, LIF)]
    try:
        yield rates
    finally:
        for h in hooks:
            h.remove()


def test_real_variant_plif_dvsg_small_resolution():
    """The one real variant here: dvsg (PLIF neurons, group 32) at 32 px, T=2, one image."""
    arch, T, img = ARCHS["spikingresformer_dvsg"], 2, 32
    sd = random_official_state(arch, 11, seed=7)
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(8))
    model = _model("spikingresformer_dvsg", sd, T, img, 11).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), Reference(arch, dict(sd), T, img)(x), rtol=0, atol=1e-5)
