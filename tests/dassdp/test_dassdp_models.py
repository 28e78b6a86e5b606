"""The hook on the real SpikingResformer (tiny): sites from dassdp_sites(), the authors' site semantics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional as sj_functional

from dassdp.config import DASSDPConfig
from dassdp.functional import dopamine_gate
from dassdp.hook import DASSDPHook
from dassdp.reference import delta_w_naive, latency_cumsum_argmax
from models.spikingresformer import create


def _step(model, opt, hook, x, y, step):
    loss = F.cross_entropy(model(x).mean(0), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        m = hook.after_optimizer_step(model, loss=loss.detach(), epoch=0, step=step)
    sj_functional.reset_net(model)
    return m


def test_spikingresformer_tiny_update_equals_authors_formulas():
    torch.manual_seed(0)
    model = create("spikingresformer_tiny", T=2, img_size=16).to(memory_format=torch.channels_last)
    sites = model.dassdp_sites()
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_steps=1))
    hook.setup(model, steps_per_epoch=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # only the rule moves weights
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(2)]
    _step(model, opt, hook, *data[0], 0)  # warm-up: gate statistics only
    seen = {}
    dssa = model.get_submodule(sites["first_last_stage_dssa"][0])
    for key, mod in (("classifier", model.classifier), ("first_last_stage_dssa", dssa)):
        mod.register_forward_hook(lambda m, a, o, k=key: seen.__setitem__(k, (a[0].detach(), o.detach())))
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = _step(model, opt, hook, *data[1], 1)
    assert "first_last_stage_dssa/dw_abs" in metrics
    T = model.T
    x, y = seen["classifier"]  # [T,B,C3], [T,B,K]
    ref = {"classifier": ((x.mean(0) > 0).float(), (y.mean(0) > 0).float(),
                          latency_cumsum_argmax(x, T), latency_cumsum_argmax(y, T))}
    xb, yb = seen["first_last_stage_dssa"]  # [T,B,C,H,W]
    sp, so = ((t.flatten(3) > 0).any(-1).float() for t in (xb, yb))  # [T,B,C]
    ref["first_last_stage_dssa"] = ((sp.sum(0) > 0).float(), (so.sum(0) > 0).float(),
                                    latency_cumsum_argmax(sp, None), latency_cumsum_argmax(so, None))
    changed = {k for k, v in model.named_parameters() if not torch.equal(w0[k], v)}  # buffers move too
    want = {f"{path}.{attr}" for path, _, attr in sites.values()}
    assert changed == want
    for name, (p, q, tp, tq) in ref.items():
        S = (q.unsqueeze(2) * p.unsqueeze(1)).mean((1, 2))
        G = dopamine_gate(S, *hook.gate_params[name].unbind())
        dw = delta_w_naive(p, q, tp, tq, a_plus=1.5e-3, a_minus=5e-4, sigma=1.0, gate=G)
        key = "{}.{}".format(*sites[name][::2])
        got = model.state_dict()[key].reshape(dw.shape)
        torch.testing.assert_close(got, w0[key].reshape(dw.shape) + dw, rtol=0, atol=1e-7)
        assert dw.abs().max() > 1e-4


def test_spikingresformer_tiny_eval_unchanged_with_rule():
    torch.manual_seed(0)
    model = create("spikingresformer_tiny", T=2, img_size=16).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    sj_functional.reset_net(model)
    hook = DASSDPHook(DASSDPConfig(enabled=True))
    hook.setup(model, steps_per_epoch=1)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out, ref) and not any(o.bufs for o in hook.observers)
