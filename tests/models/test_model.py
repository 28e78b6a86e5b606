"""Registry, shapes, DA-SSDP sites, parameter/MAC counts, the fixed faults, SOP counting."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from spikingjelly.activation_based.functional import reset_net

import models
from models import sops

IMG = 16


def _tiny(**kw):
    return models.create("spikingresformer_tiny", T=kw.pop("T", 2), img_size=kw.pop("img_size", IMG), **kw)


def test_timm_registry_and_shapes():
    for name in ("spikingresformer_ti", "spikingresformer_s", "spikingresformer_m", "spikingresformer_l",
                 "spikingresformer_cifar", "spikingresformer_dvsg", "spikingresformer_tiny"):
        assert name in timm.list_models("spikingresformer_*")
    with torch.device("meta"):
        m = timm.create_model("spikingresformer_ti", T=4, num_classes=1000, img_size=224)
    assert m.T == 4 and m.classifier.weight.shape == (1000, 384)
    tiny = timm.create_model("spikingresformer_tiny", T=3, num_classes=7, img_size=IMG)
    assert tiny(torch.randn(2, 3, IMG, IMG)).shape == (3, 2, 7)  # static -> [T, B, K]
    reset_net(tiny)
    assert tiny(torch.randn(2, 3, 3, IMG, IMG)).shape == (3, 2, 7)  # frames [B, T, C, H, W]
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        tiny(torch.randn(3, IMG, IMG))
    with pytest.raises(ValueError, match="not divisible"):
        models.create("spikingresformer_ti", img_size=200)


@pytest.mark.parametrize("name,expected", [("spikingresformer_ti", 11.14), ("spikingresformer_s", 17.76),
                                           ("spikingresformer_m", 35.52), ("spikingresformer_l", 60.3)])
def test_parameter_counts_equal_paper(name, expected):
    with torch.device("meta"):
        m = models.create(name)
    bn = {id(p) for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d) for p in mod.parameters()}
    n = sum(p.numel() for p in m.parameters() if id(p) not in bn)
    assert round(n / 1e6, 2 if expected < 60 else 1) == expected


def test_parameter_totals_of_small_variants():
    with torch.device("meta"):
        cifar, dvsg = models.create("spikingresformer_cifar"), models.create("spikingresformer_dvsg")
    assert round(sum(p.numel() for p in cifar.parameters()) / 1e6, 2) == 10.79
    assert round(sum(p.numel() for p in dvsg.parameters()) / 1e6, 2) == 2.71


@pytest.mark.parametrize("name,gmacs", [("spikingresformer_ti", 4.03), ("spikingresformer_l", 18.36)])
def test_macs_per_image_per_step_at_224(name, gmacs):
    assert round(sops.count_macs(name, 224)["macs"] / 1e9, 2) == gmacs


def test_dassdp_sites_shapes_seen_by_hooks():
    model = _tiny(num_classes=5)
    sites = model.dassdp_sites()
    assert sites == {"classifier": ("classifier", "linear", "weight"),
                     "first_last_stage_dssa": ("layers.2.1", "block", "Wproj.weight")}
    seen = []
    for alias, (path, _, attr) in sites.items():
        mod = model.get_submodule(path)
        assert isinstance(mod.get_parameter(attr), torch.nn.Parameter)
        mod.register_forward_hook(
            lambda m, i, o, a=alias: seen.append((a, tuple(i[0].shape), tuple(o.shape))))
    model(torch.randn(3, 3, IMG, IMG))
    assert seen == [("first_last_stage_dssa", (2, 3, 64, 4, 4), (2, 3, 64, 4, 4)),
                    ("classifier", (2, 3, 64), (2, 3, 5))]


@pytest.mark.parametrize("momentum", [0.1, None])  # None: cumulative average, 1 / batches seen
def test_stem_once_equals_repeated_input_in_training(momentum):
    """Static input: the stem runs once, yet logits, BN running stats and rates equal the repeated run."""
    a, b = _tiny(T=3).double(), _tiny(T=3).double()
    b.load_state_dict(a.state_dict())
    for bn in (m for m in [*a.modules(), *b.modules()] if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = momentum
    for seed in range(2):  # the second step mixes the first into the running statistics
        x = torch.randn(2, 3, IMG, IMG, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ya, yb = a(x), b(x.unsqueeze(1).repeat(1, 3, 1, 1, 1))
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
        reset_net(a)
        reset_net(b)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-12, msg=k)


def _rate_steps(frozen: bool, steps: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = _tiny(frozen_ema=frozen)
    buf = model.layers[0][0].firing_rate_x
    ptr, out = buf.data_ptr(), []
    for s in range(steps):
        x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(s))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().mean().backward()
        reset_net(model)
        assert buf.dtype == torch.float32 and buf.data_ptr() == ptr  # float32, updated in place
        assert model.state_dict()["layers.0.0.firing_rate_x"].data_ptr() == ptr
        out.append(buf.clone())
    return out


def test_firing_rates_float32_in_place_and_frozen_switch():
    fixed, frozen = _rate_steps(False), _rate_steps(True)
    torch.testing.assert_close(fixed[0], frozen[0], rtol=1e-2, atol=0)  # both start at the first batch rate
    assert not torch.equal(fixed[1], fixed[0]) and not torch.equal(fixed[2], fixed[1])  # the EMA moves
    assert torch.equal(frozen[2], frozen[0])  # the original under AMP: the low-precision EMA never moves
    assert torch.equal(frozen[0], frozen[0].bfloat16().float())


def test_gradients_flow_and_plif_tau_learns():
    model = models.create("spikingresformer_dvsg", T=2, img_size=IMG)
    x = torch.randn(2, 3, IMG, IMG)
    F.cross_entropy(model(x).mean(0), torch.tensor([1, 2])).backward()
    ws = [p for n, p in model.named_parameters() if n.endswith(".w")]
    assert ws and model.no_weight_decay() == {n for n, _ in model.named_parameters() if n.endswith(".w")}
    assert any(w.grad is not None and w.grad.abs() > 0 for w in ws)
    assert model.prologue[0].weight.grad.abs().sum() > 0


def test_sops_counted_on_spikes():
    torch.manual_seed(0)
    model, x = _tiny(T=2), torch.randn(2, 3, IMG, IMG)
    sops.calibrate(model, x)
    spikes = {}
    for name in ("layers.0.1.up.0", "layers.0.0.activation_in", "layers.0.0.activation_attn"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: spikes.__setitem__(n, o))
    res = sops.measure(model, x)
    rows = {r["name"]: r for r in res["layers"]}
    B = x.shape[0]
    assert rows["layers.0.1.up.1"]["sops"] == pytest.approx(spikes["layers.0.1.up.0"].sum().item() * 64 / B)
    n_prime = model.layers[0][0].lenth
    assert rows["layers.0.0.matmul1"]["sops"] == pytest.approx(
        spikes["layers.0.0.activation_in"].sum().item() * n_prime / B)
    assert rows["layers.0.0.matmul2"]["sops"] == pytest.approx(
        spikes["layers.0.0.activation_attn"].sum().item() * 16 / B)  # d = 16 channels per head
    assert rows["prologue.0"]["sops"] == 0 and rows["classifier"]["sops"] == 0
    assert res["sops"] > 0 and res["energy_mj"] == pytest.approx(res["sops"] * 0.9e-9)
    assert res["macs"] == pytest.approx(sops.count_macs("spikingresformer_tiny", IMG)["macs"])
    assert 0 < res["firing_rates"]["layers.0.1.up.0"] < 1
    table = sops.format_table(res)
    assert "layers.0.0.matmul1" in table and "SOPs/image" in table and "mJ" in table


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [4096, 3 * 2**15 + 7])  # one thread; sliced over the pool, ragged end
@pytest.mark.parametrize("carried", [True, False])  # a carried-over membrane, or None (= start at 0)
def test_cpu_lif_kernel_is_bit_identical_to_spikingjelly(dtype, n, carried):
    from spikingjelly.activation_based import functional as sjf
    from spikingjelly.activation_based import surrogate

    from models.lif_cpu import lif_forward

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(5, n, generator=gen) * 1.5).to(dtype)
    v0 = torch.rand(n, generator=gen) * 0.5 if carried else torch.zeros(n)
    g, g_v = torch.randn(5, n, generator=gen).to(dtype), torch.randn(n, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    v0a, v0b = v0.clone().requires_grad_(carried), v0.clone().requires_grad_(carried)
    sa, va, _ = sjf.lif_multi_step(xa, v0a, 2.0, True, 1.0, 0.0, surrogate.ATan(alpha=2.0), True, False)
    sb, vb = lif_forward(xb, v0b if carried else None, 2.0, 1.0, 2.0)
    torch.autograd.backward((sa, va), (g, g_v.to(va.dtype)))  # through the spikes and the final membrane
    torch.autograd.backward((sb, vb), (g, g_v))
    assert 0 < sa.float().mean() < 1
    assert torch.equal(sa, sb) and torch.equal(va.float(), vb) and torch.equal(xa.grad, xb.grad)
    assert sb.dtype == dtype and xb.grad.dtype == dtype and vb.dtype == torch.float32
    if carried:  # the gradient reaches the carried-over membrane (BPTT across calls without a reset)
        assert v0b.grad is not None and torch.equal(v0a.grad.float(), v0b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lif_in_two_chunks_equals_one_call(dtype):
    """T=6 in chunks of 2 and 4 without a reset: same spikes and the same input gradient as one call
    (the carried membrane passes the gradient back into the first chunk)."""
    from models.neurons import LIF

    x = (torch.randn(6, 2, 8, 3, 3, generator=torch.Generator().manual_seed(1)) * 1.5).to(dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    whole, parts = x.clone().requires_grad_(), x.clone().requires_grad_()
    lif = LIF()
    s_whole = lif(whole)
    s_whole.backward(g)
    reset_net(lif)
    s_parts = torch.cat([lif(parts[:2]), lif(parts[2:])])
    s_parts.backward(g)
    assert 0 < s_whole.float().mean() < 1
    assert torch.equal(s_whole, s_parts) and torch.equal(whole.grad, parts.grad)


def test_lif_without_keeping_the_final_membrane_gives_the_same_spikes_and_gradient():
    from models.lif_cpu import lif_forward

    x = torch.randn(4, 5000, generator=torch.Generator().manual_seed(0)) * 1.5
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    sa, va = lif_forward(xa, None, 2.0, 1.0, 2.0)
    sb, vb = lif_forward(xb, None, 2.0, 1.0, 2.0, False)
    sa.backward(g)
    sb.backward(g)
    assert va.shape == (5000,) and vb.shape == (0,)
    assert torch.equal(sa, sb) and torch.equal(xa.grad, xb.grad)


def test_model_calls_start_at_rest_unless_state_is_carried():
    """Default: each forward is one whole sequence (no reset_net needed); carry_state=True: spikingjelly's
    stateful neurons (a second call without a reset continues from the first's membranes). Train mode: an
    untrained model's zero firing-rate buffers make eval-mode attention NaN."""
    model = _tiny().train()
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second = model(x), model(x)
        assert torch.equal(first, second)
        assert all(not isinstance(m.v, torch.Tensor) for m in model.modules() if hasattr(m, "carry_state"))
        model.set_carry_state(True)
        carried = model(x)
        assert torch.equal(carried, first)
        assert not torch.equal(model(x), first)  # continues from the membranes the call before left
        reset_net(model)
        assert torch.equal(model(x), first)


@pytest.mark.parametrize("amp", [False, True])
def test_model_with_cpu_kernel_equals_model_with_spikingjelly_op(amp, monkeypatch):
    """Whole train step (channels-last, transposed attention map, bf16 autocast or not): logits, every
    gradient and the rate buffers are bit-identical whether the LIFs run the fused kernel or
    spikingjelly's op."""
    from models import neurons

    def step():
        torch.manual_seed(0)
        model = _tiny().to(memory_format=torch.channels_last).train()
        x = torch.randn(4, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x.contiguous(memory_format=torch.channels_last))
        F.cross_entropy(out.float().mean(0), torch.arange(4) % 10).backward()
        return out, {k: p.grad for k, p in model.named_parameters()}, model.state_dict()

    fused = step()
    monkeypatch.setattr(neurons, "_use_cpu_kernel", lambda x: False)
    plain = step()
    assert torch.equal(fused[0], plain[0])
    for k in fused[1]:
        assert torch.equal(fused[1][k], plain[1][k]), k
    for k in fused[2]:
        assert torch.equal(fused[2][k], plain[2][k]), k


def test_channels_last_parameters_are_strided_like_their_gradients():
    """build_model(channels_last): every 4-D weight (1x1 convolutions included) has the strides its
    gradient comes back with, so DDP's buckets and AccumulateGrad need no re-striding copy."""
    from models.config import ModelConfig

    model = models.build_model(ModelConfig(name="spikingresformer_tiny", T=2, num_classes=4, img_size=IMG))
    x = torch.randn(2, 3, IMG, IMG).contiguous(memory_format=torch.channels_last)
    model(x).float().mean().backward()
    four_d = [(n, p) for n, p in model.named_parameters() if p.dim() == 4]
    assert any(p.shape[2:] == (1, 1) for _, p in four_d)
    for n, p in four_d:
        assert p.stride() == torch.empty(p.shape, memory_format=torch.channels_last).stride(), n
        assert p.grad.stride() == p.stride(), n


def test_lif_without_a_compiler_warns_once_and_runs_spikingjelly(monkeypatch, tmp_path):
    from models import lif_cpu, neurons
    from models.cbuild import Kernels

    x = torch.randn(4, 3, 8) * 1.5
    with_kernel = neurons.LIF()
    assert with_kernel._cpu_kernel
    expected = with_kernel(x)
    fresh = Kernels(lif_cpu._kernels.source, lif_cpu._FLAGS, lif_cpu._declare)  # as if nothing were built yet
    monkeypatch.setattr(lif_cpu, "_kernels", fresh)
    monkeypatch.setattr(neurons, "_warned", False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.warns(UserWarning, match="LIF: the fused CPU kernels cannot be built .*no-such-cc"):
        fallback = neurons.LIF()
    assert not fallback._cpu_kernel
    assert torch.equal(fallback(x), expected)
    with pytest.raises(RuntimeError, match="lif_cpu: the C kernels cannot be built here"):
        lif_cpu.lif_forward(x.reshape(4, -1), None, 2.0, 1.0, 2.0)


def test_cpu_lif_kernel_empty_input():
    from models.lif_cpu import lif_forward

    x = torch.empty(4, 0, requires_grad=True)
    spikes, v = lif_forward(x, None, 2.0, 1.0, 2.0)
    spikes.sum().backward()
    assert spikes.shape == (4, 0) and v.shape == (0,) and x.grad.shape == (4, 0)


def test_torch_compile_traces_one_graph_without_breaks():
    """Full graph in train mode (rate updates included); the neurons are spikingjelly's traceable ops."""
    import torch._dynamo as dynamo

    model = _tiny().to(memory_format=torch.channels_last).train()
    explained = dynamo.explain(model)(torch.randn(2, 3, IMG, IMG))
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_torch_compile_traces_one_graph_with_sparse_conv():
    """The event-driven convolutions are opaque custom ops: still one graph, no breaks."""
    import torch._dynamo as dynamo

    model = _tiny(sparse_conv=True).to(memory_format=torch.channels_last).train()
    explained = dynamo.explain(model)(torch.randn(2, 3, IMG, IMG))
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_torch_compile_train_step_matches_eager():
    """Compiled forward + backward (inductor; the LIF's and the event-driven convolution's custom ops in
    both graphs) gives eager's gradients."""
    def grads(compiled: bool) -> dict:
        torch.manual_seed(0)
        model = _tiny().to(memory_format=torch.channels_last).train()
        model.set_sparse_conv(True, {torch.float32: 1.0}, min_group_out=1)  # every spike convolution
        fwd = models.compile_model(model) if compiled else model
        x = torch.randn(4, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
        F.cross_entropy(fwd(x).mean(0), torch.arange(4)).backward()
        return {k: p.grad for k, p in model.named_parameters()}

    eager, compiled = grads(False), grads(True)
    for k, g in eager.items():
        assert compiled[k] is not None, k
        torch.testing.assert_close(compiled[k], g, rtol=0, atol=1e-3 * float(g.abs().max()) + 1e-8, msg=k)


def test_compile_cache_key_carries_the_kernel_version():
    """A graph cached with an older LIF or convolution kernel must not be reused (it would call the old op
    signature)."""
    from models import lif_cpu

    tag = torch.compiler.config.cache_key_tag
    assert "spikingresformer.lif_cpu:" in tag and "spikingresformer.spike_conv:" in tag
    lif_cpu.tag_compile_caches(lif_cpu.__file__)  # idempotent
    assert torch.compiler.config.cache_key_tag == tag


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    model = _tiny().to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        eager = model(x)
        reset_net(model)
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def _official_ema_run(start: float | None, steps: int = 3):
    """frozen_ema under fp16 autocast, beside the official update written out: each batch's per-head rate is
    the mean of its spikes rounded to fp16; a zero buffer is re-bound to the first rate and then runs
    `buf * 0.999 + r * 0.001` in fp16; a loaded (nonzero) buffer stays float32 (float32 * 0.999 plus the
    fp16 product)."""
    torch.manual_seed(0)
    model = _tiny(frozen_ema=True)
    dssa = model.layers[0][0]
    if start is not None:  # a transfer run: loaded, nonzero rates
        dssa.firing_rate_x.fill_(start)
        dssa.firing_rate_attn.fill_(start)
    seen = {}
    dssa.activation_in.register_forward_hook(lambda m, a, o: seen.__setitem__("x", o.detach()))
    dssa.activation_attn.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o.detach()))
    want = {n: None if start is None else torch.full((dssa.num_heads,), start) for n in ("x", "attn")}
    for s in range(steps):
        x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(s))
        with torch.autocast("cpu", dtype=torch.float16):
            model(x).float().mean().backward()
        reset_net(model)
        T, B, C, H, W = seen["x"].shape
        rates = {"x": seen["x"].reshape(T, B, dssa.num_heads, -1).float().mean((0, 1, 3)),
                 "attn": seen["attn"].float().mean((0, 1, 3, 4))}  # [h] each
        for n, r in rates.items():
            r = r.half()
            b = r if want[n] is None else want[n]  # fp16 when re-bound, else the float32 buffer
            want[n] = b * 0.999 + r * (1 - 0.999)
        for n, buf in (("x", dssa.firing_rate_x), ("attn", dssa.firing_rate_attn)):
            assert buf.dtype == torch.float32 and torch.equal(buf.view(-1), want[n].float()), (s, n)
    return dssa


def test_frozen_ema_is_the_official_update_fresh_fp16_and_loaded_fp32():
    fresh = _official_ema_run(None)
    assert fresh.low_precision_ema is True
    assert torch.equal(fresh.firing_rate_x, fresh.firing_rate_x.half().float())  # fp16 values throughout
    loaded = _official_ema_run(0.2)  # transfer: tracks in float32 (the official code never froze it there)
    assert loaded.low_precision_ema is False
    assert not torch.equal(loaded.firing_rate_x, loaded.firing_rate_x.half().float())
