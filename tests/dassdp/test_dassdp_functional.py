"""dassdp.functional against the naive [B, C_out, C_in] formula and the batch gate formula."""
from __future__ import annotations

import pytest
import torch

from dassdp.functional import GateEstimator, delta_w, dopamine_gate, latency, synchrony
from dassdp.reference import delta_w_naive, gate_fit_batch, latency_cumsum_argmax

HP = dict(a_plus=1.5e-3, a_minus=5e-4, sigma=1.0)


def random_site(T=4, B=7, C_in=33, C_out=19, rate=0.3, seed=0, mode="last"):
    g = torch.Generator().manual_seed(seed)
    s_pre = (torch.rand(T, B, C_in, generator=g) < rate).float()  # [T,B,C_in]
    s_post = (torch.rand(T, B, C_out, generator=g) < rate).float()  # [T,B,C_out]
    pre, post = (s_pre.sum(0) > 0).float(), (s_post.sum(0) > 0).float()
    return pre, post, latency(s_pre, mode), latency(s_post, mode), s_pre, s_post


def test_latency_last_is_the_authors_cumsum_argmax_and_silent_units_get_T():
    T = 5
    spikes = (torch.rand(T, 9, 40, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    silent = spikes.sum(0) == 0
    assert silent.any() and (~silent).any()
    t = latency(spikes, "last")
    assert torch.equal(t, latency_cumsum_argmax(spikes, silent_value=T))
    assert torch.equal(t[silent], torch.full_like(t[silent], T))
    # the authors' Wproj site leaves silent channels at 0 (argmax of an all-zero cumsum): documented quirk
    assert torch.equal(latency_cumsum_argmax(spikes, silent_value=None)[silent], torch.zeros_like(t[silent]))


def test_latency_first_and_last_by_definition():
    spikes = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)  # [T=4, C=3]
    spikes = spikes.unsqueeze(1)  # [T, B=1, C]
    assert latency(spikes, "first").tolist() == [[1.0, 0.0, 4.0]]
    assert latency(spikes, "last").tolist() == [[3.0, 2.0, 4.0]]
    assert latency(spikes.bool(), "first").dtype == torch.float32
    with pytest.raises(ValueError, match="mode"):
        latency(spikes, "middle")


def test_synchrony_is_mean_of_cofiring():
    pre, post, *_ = random_site()
    naive = (post.unsqueeze(2) * pre.unsqueeze(1)).mean((1, 2))  # [B]
    torch.testing.assert_close(synchrony(pre, post), naive)


@pytest.mark.parametrize("mode", ["last", "first"])
@pytest.mark.parametrize("with_gate", [False, True])
@pytest.mark.parametrize("T", [1, 4, 10])
def test_delta_w_equals_naive_formula(mode, with_gate, T):
    pre, post, t_pre, t_post, *_ = random_site(T=T, mode=mode, seed=T)
    gate = torch.rand(pre.shape[0], generator=torch.Generator().manual_seed(2)) * 2 if with_gate else None
    ref = delta_w_naive(pre, post, t_pre, t_post, gate=gate, **HP)
    for kw in ({}, {"T": T}):
        got = delta_w(pre, post, t_pre, t_post, gate=gate, **HP, **kw)
        assert got.shape == (post.shape[1], pre.shape[1])
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-9)
    assert ref.abs().max() > 1e-4  # the comparison is not between two zero matrices


def test_delta_w_sigma_and_clip():
    pre, post, t_pre, t_post, *_ = random_site(T=6, seed=3)
    big = dict(a_plus=3.0, a_minus=2.0, sigma=2.5)
    for clip in (None, 0.5):
        ref = delta_w_naive(pre, post, t_pre, t_post, clip=clip, **big)
        torch.testing.assert_close(delta_w(pre, post, t_pre, t_post, clip=clip, T=6, **big), ref)
    assert delta_w(pre, post, t_pre, t_post, clip=0.5, **big).abs().max() == 0.5  # the clip is active


def _largest_allocation(fn) -> int:
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_delta_w_never_materialises_b_cout_cin():
    B, C_out, C_in = 16, 200, 256
    pre, post, t_pre, t_post, *_ = random_site(B=B, C_in=C_in, C_out=C_out)
    full = B * C_out * C_in * 4  # bytes of one [B, C_out, C_in] float32 tensor
    ours = _largest_allocation(lambda: delta_w(pre, post, t_pre, t_post, T=4, **HP))
    naive = _largest_allocation(lambda: delta_w_naive(pre, post, t_pre, t_post, **HP))
    assert naive >= full  # the probe sees the naive form's tensors
    assert ours < full // 4, (ours, full)


def test_dopamine_gate_formula_and_clip():
    S = torch.tensor([0.0, 0.1, 0.2, 0.9])
    G = dopamine_gate(S, k=-2.0, mu=0.2, sd=0.1, lo=0.0, hi=2.0)
    torch.testing.assert_close(G, torch.tensor([2.0, 2.0, 1.0, 0.0]))
    G = dopamine_gate(S, torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.2), torch.tensor(0.4))
    torch.testing.assert_close(G, 1 + 0.5 * (S - 0.2) / 0.4)


def test_gate_estimator_equals_batch_formula():
    g = torch.Generator().manual_seed(4)
    est, all_S, all_L = GateEstimator(), [], []
    for B in (5, 8, 3, 8, 8, 1):
        S = torch.rand(B, generator=g) * 0.3  # [B]
        loss = torch.rand((), generator=g) * 2 + 1 - S.mean() * 3  # correlated with synchrony
        est.update(S, loss)
        all_S.append(S)
        all_L.append(loss.repeat(B))
    k, mu, sd = est.fit()
    kr, mur, sdr = gate_fit_batch(torch.cat(all_S).double(), torch.cat(all_L).double())
    assert k.dtype == torch.float64 and abs(float(k)) > 0.1
    torch.testing.assert_close((k, mu, sd), (kr, mur, sdr), rtol=1e-9, atol=1e-12)
    est2 = GateEstimator()
    est2.load_state_dict(est.state_dict())
    assert torch.equal(torch.stack(est2.fit()), torch.stack(est.fit()))


def test_gate_estimator_empty_gives_unit_gate():
    k, mu, sd = GateEstimator().fit()
    assert (float(k), float(mu), float(sd)) == (0.0, 0.0, 1.0)
    assert torch.equal(dopamine_gate(torch.rand(4), k, mu, sd), torch.ones(4))


def test_gate_estimator_float64_sums_survive_many_steps():
    est = GateEstimator()
    S = torch.full((256,), 0.25) + torch.linspace(-1e-3, 1e-3, 256)
    for _ in range(2000):  # 512k samples; float32 sums would lose the tiny variance
        est.update(S, torch.tensor(2.0))
    _, mu, sd = est.fit()
    torch.testing.assert_close(mu, S.double().mean(), rtol=1e-9, atol=0)
    torch.testing.assert_close(sd, S.double().std(unbiased=False) + 1e-8, rtol=1e-6, atol=0)


def test_latency_of_silent_units_can_be_the_authors_0():
    spikes = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 1.0]]])  # [T=3, B=1, C=2]: unit 0 never fires
    assert latency(spikes, "last", silent=0).tolist() == [[0.0, 2.0]]
    assert torch.equal(latency(spikes, "last", silent=0), latency_cumsum_argmax(spikes, silent_value=None))
    assert latency(spikes, "first", silent=0).tolist() == [[0.0, 0.0]]
    assert latency(spikes, "last").tolist() == [[3.0, 2.0]]
