"""Recipe parts: optimizer parameter groups, the cosine schedule with warm-up, the loss and TET."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from launch import metrics, parts
from launch.config import OptimConfig, SchedConfig


def test_no_weight_decay_on_1d_params_and_plif_w():
    from spikingjelly.activation_based import neuron

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), neuron.ParametricLIFNode(init_tau=2.0),
                          nn.Linear(4, 2))
    opt = parts.build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.01))
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert wd[id(p)] == (0.01 if p.dim() > 1 else 0.0), name
    assert isinstance(opt, torch.optim.AdamW)


def _expected_lr(t: float, total: float, warm: float, lr=1e-3, wlr=1e-5, mlr=1e-5) -> float:
    if t < warm:
        return wlr + t * (lr - wlr) / warm
    return mlr + 0.5 * (lr - mlr) * (1 + math.cos(math.pi * t / total))


def test_cosine_with_warmup_per_epoch_and_per_step():
    p = nn.Parameter(torch.zeros(2))
    for per_step in (False, True):
        opt = torch.optim.AdamW([p], lr=1e-3)
        sched = parts.build_scheduler(opt, SchedConfig(per_step=per_step), epochs=10, steps_per_epoch=4)
        assert math.isclose(opt.param_groups[0]["lr"], 1e-5)  # the first epoch starts at warmup_lr
        for e in range(10):
            for s in range(4):
                t = e * 4 + s
                want = _expected_lr(t, 40, 12) if per_step else _expected_lr(e, 10, 3)
                assert math.isclose(opt.param_groups[0]["lr"], want, rel_tol=1e-9), (per_step, e, s)
                sched.step_update(t + 1)
            sched.step(e + 1)


def test_loss_on_t_mean_and_tet():
    torch.manual_seed(0)
    out, y = torch.randn(4, 5, 3), torch.randint(0, 3, (5,))  # [T, B, K]
    crit = parts.Criterion(label_smoothing=0.1)
    assert torch.allclose(crit(out, y), F.cross_entropy(out.mean(0), y, label_smoothing=0.1))
    soft = F.one_hot(y, 3).float() * 0.9 + 0.1 / 3
    assert torch.allclose(crit(out, soft), -(soft * out.mean(0).log_softmax(-1)).sum(-1).mean())
    tet = parts.Criterion(tet=True, phi=1.0, lam=0.2)
    naive = sum(F.cross_entropy(out[t], y) for t in range(4)) / 4 * 0.8 + 0.2 * ((out - 1.0) ** 2).mean()
    assert torch.allclose(tet(out, y), naive)


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    c1, c5 = metrics.topk_correct(logits, torch.tensor([1, 2, 0]))
    assert int(c1) == 1 and int(c5) == 3


def test_a_model_built_for_a_gpu_asks_for_no_cpu_kernel(monkeypatch):
    """Built for a GPU (the trainer's `parts.build_model(cfg, acc.device)`; nothing is moved, so no GPU is
    needed) the LIF neurons and the `auto` convolutions are set up without the CPU kernels: nothing compiles
    them or asks whether they can be built. For the CPU the same config gets both (this machine has a
    compiler)."""
    from models import lif_cpu, spike_conv
    from models.config import ModelConfig
    from models.neurons import LIF

    cfg = ModelConfig(name="spikingresformer_cifar", T=2, num_classes=4, img_size=32, sparse_conv="auto")
    on_cpu = parts.build_model(cfg, torch.device("cpu"))
    assert all(m._cpu_kernel for m in on_cpu.modules() if isinstance(m, LIF))
    assert any(getattr(m, "sparse_limits", None) for m in on_cpu.modules())
    x = torch.randn(2, 3, 32, 32)
    expected = on_cpu.eval()(x)

    def asked():
        raise AssertionError("a CPU kernel was asked for while building for a GPU")

    monkeypatch.setattr(lif_cpu, "library", asked)
    monkeypatch.setattr(spike_conv, "unavailable_reason", asked)
    model = parts.build_model(cfg, torch.device("cuda"))
    assert not any(m._cpu_kernel for m in model.modules() if isinstance(m, LIF))
    assert not any(getattr(m, "sparse_limits", None) for m in model.modules())
    model.load_state_dict(on_cpu.state_dict())  # on a CPU it computes the same (spikingjelly's op, dense)
    torch.testing.assert_close(model.eval()(x), expected, rtol=1e-4, atol=1e-4)
