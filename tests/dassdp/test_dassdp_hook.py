"""DASSDPHook on a toy spiking model: warm-up, skipped steps, eval, resume, site semantics, errors."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from dassdp_toy import build, make_batches, train_steps
from spikingjelly.activation_based import functional as sj_functional

from dassdp.config import DASSDPConfig
from dassdp.functional import dopamine_gate
from dassdp.hook import DASSDPHook
from dassdp.reference import delta_w_naive, latency_cumsum_argmax
from dassdp.sites import SiteError

SITES = {"classifier": "classifier.weight", "first_last_stage_dssa": "layers.1.Wproj.weight"}


def setup_run(seed=0, lr=0.05, **cfg):
    model = build(seed)
    hook = DASSDPHook(DASSDPConfig(enabled=True, **cfg))
    hook.setup(model, steps_per_epoch=4)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return model, hook, opt


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def test_no_weight_change_during_warmup_then_rule_acts():
    batches = make_batches(6)
    model, hook, opt = setup_run(lr=0.0, warmup_steps=3)  # lr 0: only the rule can move weights
    w0 = params(model)
    metrics = train_steps(model, opt, hook, batches, range(3))
    assert same(params(model), w0)
    assert all("classifier/sync" in m and "classifier/dw_abs" not in m for m in metrics)
    assert not hook.fitted and float(hook.gates["classifier"].sums[0]) == 3 * 6
    metrics = train_steps(model, opt, hook, batches, range(3, 6))
    w = params(model)
    moved = [k for k in w if not torch.equal(w[k], w0[k])]
    assert sorted(moved) == sorted(SITES.values())
    assert hook.fitted and hook.applied_steps == 3
    for site in SITES:
        names = ("sync", "cofire", "gate_k", "gate_mean", "dw_abs")
        assert {f"{site}/{m}" for m in names} <= set(metrics[-1])


def test_warmup_by_epoch_matches_a_run_without_the_hook():
    batches = make_batches(5)
    with_hook, hook, opt = setup_run(warmup_epochs=1)  # 4 steps per epoch in train_steps below
    plain = build(0)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    train_steps(with_hook, opt, hook, batches, range(4), steps_per_epoch=4)  # epoch 0: warm-up
    train_steps(plain, opt_plain, None, batches, range(4), steps_per_epoch=4)
    assert same(params(with_hook), params(plain))
    assert not hook.in_warmup(epoch=1, step=4) and hook.in_warmup(epoch=0, step=999)
    train_steps(with_hook, opt, hook, batches, [4], steps_per_epoch=4)  # epoch 1: the rule acts
    train_steps(plain, opt_plain, None, batches, [4], steps_per_epoch=4)
    assert hook.applied_steps == 1 and not torch.equal(with_hook.classifier.weight, plain.classifier.weight)


def test_gate_is_fitted_once_from_the_warmup_sums():
    batches = make_batches(7)
    model, hook, opt = setup_run(warmup_steps=4)
    train_steps(model, opt, hook, batches, range(4))
    expected = {n: torch.stack(g.fit()) for n, g in hook.gates.items()}
    train_steps(model, opt, hook, batches, range(4, 7))
    for n in SITES:
        assert torch.equal(hook.gate_params[n], expected[n])
    assert any(abs(float(p[0])) > 1e-3 for p in hook.gate_params.values())  # a real, non-trivial gate


def _skipped_step(model, batch):
    """Forward + backward whose optimizer step is skipped (AMP overflow): the trainer calls no hook."""
    x, y = batch
    torch.nn.functional.cross_entropy(model(x).mean(0), y).backward()
    model.zero_grad(set_to_none=True)
    sj_functional.reset_net(model)


def test_skipped_steps_leave_no_trace():
    batches = make_batches(5)
    a, ha, oa = setup_run(warmup_steps=1)
    train_steps(a, oa, ha, batches, range(2))
    _skipped_step(a, batches[2])
    train_steps(a, oa, ha, [None, None, batches[3], batches[4]], range(2, 4))
    b, hb, ob = setup_run(warmup_steps=1)
    train_steps(b, ob, hb, [batches[i] for i in (0, 1, 3, 4)], range(4))
    assert same(params(a), params(b))
    assert torch.equal(ha.gates["classifier"].sums, hb.gates["classifier"].sums)


def test_no_change_without_a_new_training_forward():
    batches = make_batches(3)
    model, hook, opt = setup_run(warmup_steps=0)
    train_steps(model, opt, hook, batches, range(2))
    before = params(model)
    assert hook.after_optimizer_step(model, loss=torch.tensor(1.0), epoch=0, step=2) == {}  # called twice
    model.eval()
    with torch.no_grad():
        model(batches[2][0])  # an eval forward records nothing
    sj_functional.reset_net(model)
    assert not any(o.ready for o in hook.observers)
    assert hook.after_optimizer_step(model, loss=torch.tensor(1.0), epoch=0, step=2) == {}
    assert same(params(model), before) and hook.applied_steps == 2


def test_eval_outputs_unchanged_with_rule_attached():
    batches = make_batches(3)
    model, hook, opt = setup_run(warmup_steps=1)
    train_steps(model, opt, hook, batches, range(2))
    hook.close()
    twin = copy.deepcopy(model)  # the same weights, no rule attached
    hook2 = DASSDPHook(DASSDPConfig(enabled=True, warmup_steps=1))
    hook2.setup(model, steps_per_epoch=4)
    model.eval(), twin.eval()
    with torch.no_grad():
        out, ref = model(batches[2][0]), twin(batches[2][0])
    assert torch.equal(out, ref)
    assert not any(o.bufs for o in hook2.observers)  # nothing recorded in eval mode
    sj_functional.reset_net(model), sj_functional.reset_net(twin)
    model.train(), twin.train()
    assert torch.equal(model(batches[2][0]), twin(batches[2][0]))  # observers never alter the forward
    assert all(o.ready for o in hook2.observers)


def test_observers_record_detached_buffers_without_graph():
    batches = make_batches(1)
    model, hook, _ = setup_run(warmup_steps=0)
    model.train()
    model(batches[0][0])
    for o in hook.observers:
        assert o.ready and all(not b.requires_grad and b.grad_fn is None for b in o.bufs.values())
        ptrs = {k: b.data_ptr() for k, b in o.bufs.items()}
    model(batches[0][0])
    assert {k: b.data_ptr() for k, b in hook.observers[-1].bufs.items()} == ptrs  # preallocated, reused


def _capture(model):
    """The sites' raw inputs/outputs of the next training forward (test-side forward hooks)."""
    seen = {}
    for name, mod in (("cls", model.classifier), ("blk", model.layers[1])):
        mod.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, (a[0].detach(), o.detach())))
    return seen


def test_one_applied_step_equals_the_authors_formulas():
    """Site semantics: classifier (T-mean > 0, sign latencies), block (any spatial > 0), last spike."""
    batches = make_batches(3)
    model, hook, opt = setup_run(lr=0.0, warmup_steps=2)
    train_steps(model, opt, hook, batches, range(2))
    seen = _capture(model)
    w0 = {k: v.clone() for k, v in params(model).items()}
    train_steps(model, opt, hook, batches, [2])
    T = model.T
    x, y = seen["cls"]  # [T,B,C_in], [T,B,C_out]
    pre, post = (x.mean(0) > 0).float(), (y.mean(0) > 0).float()
    t_pre, t_post = latency_cumsum_argmax(x, T), latency_cumsum_argmax(y, T)
    xb, yb = seen["blk"]  # [T,B,C,H,W]
    sp = (xb.flatten(3) > 0).any(-1).float()  # [T,B,C]
    so = (yb.flatten(3) > 0).any(-1).float()
    assert (sp.sum(0) == 0).any() and (x > 0).sum(0).eq(0).any()  # never-fired units on both sites
    sites = {"classifier": (pre, post, t_pre, t_post),  # the authors' classifier: a never-fired unit gets T
             "first_last_stage_dssa": ((sp.sum(0) > 0).float(), (so.sum(0) > 0).float(),
                                       latency_cumsum_argmax(sp, None), latency_cumsum_argmax(so, None))}
    for name, (p, q, tp, tq) in sites.items():
        S = (q.unsqueeze(2) * p.unsqueeze(1)).mean((1, 2))
        k, mu, sd = hook.gate_params[name].unbind()
        G = dopamine_gate(S, k, mu, sd)
        ref = delta_w_naive(p, q, tp, tq, a_plus=1.5e-3, a_minus=5e-4, sigma=1.0, gate=G)
        key = SITES[name]
        got = params(model)[key].view_as(ref)
        torch.testing.assert_close(got, w0[key].view_as(ref) + ref, rtol=0, atol=1e-7)  # float32 of |W|
        assert ref.abs().max() > 1e-4


def _checkpoint(model, opt, hook):
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "hook": hook.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("stop", [2, 6])  # in the middle of warm-up, and after it
def test_resume_equals_uninterrupted(stop):
    batches = make_batches(9)
    model, hook, opt = setup_run(warmup_steps=4)
    train_steps(model, opt, hook, batches, range(9))
    model2, hook2, opt2 = setup_run(warmup_steps=4)
    train_steps(model2, opt2, hook2, batches, range(stop))
    ck = _checkpoint(model2, opt2, hook2)
    hook2.close()
    model3, hook3, opt3 = setup_run(seed=1, warmup_steps=4)  # different init: everything comes from ck
    model3.load_state_dict(ck["model"])
    opt3.load_state_dict(ck["opt"])
    hook3.load_state_dict(ck["hook"])
    train_steps(model3, opt3, hook3, batches, range(stop, 9))
    assert same(params(model3), params(model))
    assert hook3.fitted and torch.equal(hook3.gate_params["classifier"], hook.gate_params["classifier"])


def test_raw_site_strings_equal_aliases():
    batches = make_batches(4)
    a, ha, oa = setup_run(warmup_steps=2)
    b, hb, ob = setup_run(warmup_steps=2, sites=["classifier:linear:weight", "layers.1:block:Wproj.weight"])
    train_steps(a, oa, ha, batches, range(4))
    train_steps(b, ob, hb, batches, range(4))
    assert same(params(a), params(b))


def test_bad_sites_and_state_give_clear_errors():
    model = build(0)
    attach = lambda sites: DASSDPHook(DASSDPConfig(enabled=True, sites=sites)).setup(model, steps_per_epoch=1)
    with pytest.raises(SiteError, match="valid names: classifier, first_last_stage_dssa"):
        attach(["clasifier"])
    with pytest.raises(SiteError, match="'layers.9' not found"):
        attach(["layers.9:block:Wproj.weight"])
    with pytest.raises(SiteError, match="must be one of"):
        attach(["classifier:conv:weight"])
    with pytest.raises(SiteError, match="a block site needs"):
        attach(["classifier:block:weight"])  # wrong type: seen at the first training forward
        model(make_batches(1)[0][0])
    hook = DASSDPHook(DASSDPConfig(enabled=True, sites=["classifier"]))
    with pytest.raises(ValueError, match="resume with the same sites"):
        hook.load_state_dict(DASSDPHook(DASSDPConfig(enabled=True)).state_dict())
    with pytest.raises(ValueError, match="dassdp.sigma"):
        DASSDPHook(DASSDPConfig(enabled=True, sigma=0.0))


def test_presets():  # `enabled: false` builds no hook at all: tests/launch/test_hook_registry.py
    code, paper = DASSDPConfig(), DASSDPConfig(preset="paper")
    assert (code.latency, code.a_minus, paper.latency, paper.a_minus) == ("last", 5e-4, "first", 1e-4)
    assert (code.block_silent, paper.block_silent) == ("zero", "T")
    assert DASSDPConfig(preset="paper", a_minus=2e-4).a_minus == 2e-4  # explicit keys win over the preset


def test_first_spike_preset_runs_and_differs_from_last():
    batches = make_batches(4)
    a, ha, oa = setup_run(warmup_steps=2)
    b, hb, ob = setup_run(warmup_steps=2, latency="first")
    train_steps(a, oa, ha, batches, range(4))
    train_steps(b, ob, hb, batches, range(4))
    assert not torch.equal(a.classifier.weight, b.classifier.weight)


def test_a_never_fired_block_channel_has_latency_0_in_the_code_preset_and_T_in_the_paper_preset():
    """The authors' W_proj latency is `cumsum(0).argmax(0)`: 0 for a channel that never fired."""
    batches = make_batches(1)
    seen = {}
    for preset in ("code", "paper"):
        model, hook, _ = setup_run(preset=preset, latency="last")
        obs = {o.spec.name: o for o in hook.observers}["first_last_stage_dssa"]
        model(batches[0][0])
        sj_functional.reset_net(model)
        silent = obs.bufs["post"] == 0  # [B, C]
        assert silent.any() and (~silent).any()
        seen[preset] = obs.bufs["t_post"]
        assert torch.equal(obs.bufs["t_post"][~silent], seen["code"][~silent])
    assert (seen["code"][silent] == 0).all() and (seen["paper"][silent] == model.T).all()
