"""Mode `dassdp`: the DA-SSDP hook's overhead on a training step, and dW ours vs the naive form.

Part `hook`: two copies of the same model (built as the trainer builds it, `models.build_model`), one with
`dassdp.DASSDPHook` attached (observers + the update after every optimizer step, warm-up over after one
step) and one without, trained step by step interleaved dassdp_on, dassdp_off, dassdp_on, ... The ratio of
step times is the overhead; the hook's own time (observers' recording + after_optimizer_step) is measured
inside the same steps.
Part `alone`: the hook alone at the model's true site shapes with batch B (random spikes, rule acting):
cheap and steady where whole training steps are too slow or noisy to time.
Part `dw`: `dassdp.functional.delta_w` vs `dassdp.reference.delta_w_naive` (the authors' [B, C_out, C_in]
form) at ImageNet-L site shapes, time and peak memory, interleaved.

Peak memory has one method, `harness.PeakMemory`: on CPU the torch profiler's allocator events. They count
every tensor allocation of the process, including an op's internal workspaces and autograd's buffers, in
any thread; a TorchDispatchMode that sums op outputs (the other way to do it) misses workspaces and
allocations made outside the mode's thread, so it under-counts.
"""
from __future__ import annotations

import copy
import time

import torch

from tools.bench.harness import Bench, PeakMemory, timed
from tools.bench.stepper import Stepper, synthetic_batch, trainer_model

PARTS = ("hook", "alone", "dw")
FULL = {"model": "spikingresformer_cifar", "img_size": 32, "T": 4, "batch_size": 32, "num_classes": 10,
        "steps_per_repeat": 1, "repeats": 7, "warmup": 2, "parts": list(PARTS), "alone_repeats": 20,
        "dw_batch": 16, "dw_shapes": ["1000x1024", "1024x1024"], "dw_T": 4, "dw_rate": 0.3, "dw_repeats": 7}
QUICK = {**FULL, "batch_size": 16, "repeats": 3, "warmup": 1, "dw_repeats": 3, "alone_repeats": 5}


def _model(s: dict, device: torch.device) -> torch.nn.Module:
    from models.config import ModelConfig

    cfg = ModelConfig(name=s["model"], T=s["T"], num_classes=s["num_classes"], img_size=s["img_size"],
                      in_channels=3, channels_last=True)
    return trainer_model(cfg, device)


class ObserverTimer:
    """Seconds the site observers spend recording in forwards (CPU: no async work to wait for).

    Around each observer's own forward hooks it registers one hook first in the module's order (start the
    clock) and one last (stop it), through torch's public hook API: the observers stay untouched.
    """

    def __init__(self, observers):
        self.seconds = 0.0
        self._t0 = 0.0
        self._handles = []
        for o in observers:
            m = o.module
            self._handles += [m.register_forward_pre_hook(self._start, prepend=True),
                              m.register_forward_pre_hook(self._stop),
                              m.register_forward_hook(self._start, prepend=True),
                              m.register_forward_hook(self._stop)]

    def _start(self, *_) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, *_) -> None:
        self.seconds += time.perf_counter() - self._t0

    def remove(self) -> None:
        """Detach the timing hooks."""
        for h in self._handles:
            h.remove()


def _own_time(case, stepper: Stepper, timer: ObserverTimer | None, out: dict[str, list[float]]):
    """Wrap a dassdp_on case: after each call append ms per step of after_optimizer_step and of the
    hook's own work (observers + after_optimizer_step) to out["after"] and out["own"]."""
    def run() -> int:
        obs0, n_hook = (timer.seconds if timer else 0.0), len(stepper.hook_seconds)
        n = case()
        after = sum(stepper.hook_seconds[n_hook:])
        obs = (timer.seconds - obs0) if timer else 0.0
        out["after"].append(1e3 * after / n)
        out["own"].append(1e3 * (after + obs) / n)
        return n
    return run


def hook_part(bench: Bench, s: dict) -> None:
    """dassdp_on vs dassdp_off step time (interleaved) and peak memory per step."""
    from dassdp import DASSDPHook
    from dassdp.config import DASSDPConfig

    dev = bench.device
    torch.manual_seed(0)
    off = _model(s, dev)
    on = copy.deepcopy(off)
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_epochs=0, warmup_steps=1))
    hook.setup(on, steps_per_epoch=1000)
    x, y = synthetic_batch(s["batch_size"], 3, s["img_size"], s["num_classes"], dev)  # channels-last
    steppers = {"dassdp_on": Stepper(on, hook=hook), "dassdp_off": Stepper(off)}
    cases = {name: st.case(x, y, s["steps_per_repeat"]) for name, st in steppers.items()}
    timer = ObserverTimer(hook.observers) if dev.type == "cpu" else None
    own_ms: dict[str, list[float]] = {"after": [], "own": []}  # per call: ms per step
    cases["dassdp_on"] = _own_time(cases["dassdp_on"], steppers["dassdp_on"], timer, own_ms)
    label = f"{s['model']} B={s['batch_size']} T={s['T']} {s['img_size']}px fp32"
    samples = bench.compare(cases, metric="train_step_time", unit="ms/step", warmup=s["warmup"],
                            repeats=s["repeats"], per_second=False, label=label)
    after, own = (own_ms[k][-s["repeats"]:] for k in ("after", "own"))  # the timed rounds, in order
    rounds = [a / b for a, b in zip(samples["dassdp_on"], samples["dassdp_off"])]
    bench.add_ratio("dassdp_on", "dassdp_off", "train_step_time", rounds, label=label)
    bench.add("dassdp_on_vs_off", "step_overhead", "%", [100.0 * (r - 1.0) for r in rounds], label=label)
    for name, fn in cases.items():
        mems = []
        for _ in range(2):
            with PeakMemory(dev) as pm:
                timed(fn, dev)
            mems.append(pm.mib)
        bench.add(name, "step_peak_memory", "MiB", mems, label=label, memory_method=pm.method)
    bench.add("dassdp_on", "after_optimizer_step_time", "ms/step", after, label=label)
    if timer is not None:
        timer.remove()
        bench.add("dassdp_on", "hook_own_time", "ms/step", own, label=label,
                  what="observers' recording in the forward + after_optimizer_step")
        off_ms = samples["dassdp_off"]
        bench.add("dassdp_on", "hook_own_share", "%", [100 * a / b for a, b in zip(own, off_ms)], label=label,
                  what="hook_own_time / the same round's dassdp_off step time")
    applied = steppers["dassdp_on"].metrics
    bench.notes.append(f"dassdp hook metrics after the last step: "
                       f"{ {k: float(v) for k, v in applied.items()} }")


def alone_part(bench: Bench, s: dict) -> None:
    """The hook alone, ms per step: every site recorded from random [T, B, ...] tensors at the model's site
    shapes (taken from one B=1 training forward), then after_optimizer_step with the rule acting."""
    from dassdp import DASSDPHook
    from dassdp.config import DASSDPConfig

    dev = bench.device
    torch.manual_seed(0)
    model = _model(s, dev).train()
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_epochs=0, warmup_steps=0))
    hook.setup(model, steps_per_epoch=1000)
    shapes = []  # (observer, side, [T, 1, ...]) from one B=1 training forward

    def capture(o, side):
        def fn(module, args, output=None):
            shapes.append((o, side, (args[0] if side == "pre" else output).shape))
        return fn

    handles = [h for o in hook.observers for h in (o.module.register_forward_pre_hook(capture(o, "pre")),
                                                    o.module.register_forward_hook(capture(o, "post")))]
    with torch.no_grad():
        model(synthetic_batch(1, 3, s["img_size"], s["num_classes"], dev)[0])
    for h in handles:
        h.remove()
    from spikingjelly.activation_based.functional import reset_net

    reset_net(model)
    g = torch.Generator(device=dev).manual_seed(0)
    seen = [(o, side, torch.randn(shape[0], s["batch_size"], *shape[2:], generator=g, device=dev))
            for o, side, shape in shapes]  # [T, B, ...] at the site's shape
    loss = torch.tensor(2.3, device=dev)
    steps = iter(range(10**9))

    def replay() -> int:
        for o, side, x in seen:
            o.record(side, x)
        with torch.no_grad():
            hook.after_optimizer_step(model, loss=loss, epoch=0, step=1000 + next(steps))
        return 1

    label = f"{s['model']} sites, B={s['batch_size']} T={s['T']} {s['img_size']}px"
    bench.compare({"dassdp_hook_alone": replay}, metric="hook_alone_time", unit="ms/step", warmup=2,
                  repeats=s["alone_repeats"], per_second=False, label=label,
                  site_shapes=[f"{side}:{tuple(x.shape)}" for _, side, x in seen])
    hook.close()


def site_inputs(B: int, C_in: int, C_out: int, T: int, device, seed: int = 0, rate: float = 0.3):
    """Random spikes of one site: pre [B, C_in], post [B, C_out], their last-spike latencies, gate [B]."""
    from dassdp.functional import latency

    g = torch.Generator().manual_seed(seed)
    s_pre = (torch.rand(T, B, C_in, generator=g) < rate).float().to(device)  # [T, B, C_in]
    s_post = (torch.rand(T, B, C_out, generator=g) < rate).float().to(device)  # [T, B, C_out]
    pre, post = (s_pre.sum(0) > 0).float(), (s_post.sum(0) > 0).float()  # [B, C_in], [B, C_out]
    gate = (torch.rand(B, generator=g) * 2).to(device)  # [B]
    return pre, post, latency(s_pre, "last"), latency(s_post, "last"), gate


def _calls(fn, **kwargs):
    """A harness case calling fn(**kwargs) once (one item)."""
    def run() -> int:
        fn(**kwargs)
        return 1
    return run


def dw_part(bench: Bench, s: dict) -> None:
    """delta_w (ours) vs delta_w_naive at each shape: time per call, peak memory, max difference."""
    from dassdp.functional import delta_w
    from dassdp.reference import delta_w_naive

    dev = bench.device
    kw = {"a_plus": 1.5e-3, "a_minus": 5e-4, "sigma": 1.0}
    for shape in s["dw_shapes"]:
        C_out, C_in = (int(v) for v in shape.lower().split("x"))
        pre, post, t_pre, t_post, gate = site_inputs(s["dw_batch"], C_in, C_out, s["dw_T"], dev,
                                                     rate=s["dw_rate"])
        d = {"pre": pre, "post": post, "t_pre": t_pre, "t_post": t_post, "gate": gate}
        label = f"B={s['dw_batch']} {C_out}x{C_in} T={s['dw_T']}"
        cases = {"dw_ours": _calls(delta_w, **d, **kw, T=s["dw_T"]),
                 "dw_naive": _calls(delta_w_naive, **d, **kw)}
        bench.compare(cases, metric="dw_time", unit="ms/call", warmup=1, repeats=s["dw_repeats"],
                      baseline="dw_naive", per_second=False, label=label)
        for name, fn in cases.items():
            mems = []
            for _ in range(3):
                with PeakMemory(dev) as pm:
                    fn()
                mems.append(pm.mib)
            bench.add(name, "dw_peak_memory", "MiB", mems, label=label, memory_method=pm.method)
        err = (delta_w(**d, **kw, T=s["dw_T"]) - delta_w_naive(**d, **kw)).abs().max().item()
        bench.add("dw_ours_vs_naive", "dw_max_abs_error", "abs", [err], label=label)


def run(bench: Bench, s: dict, cache) -> None:
    """Run the requested parts (hook, alone, dw)."""
    parts = {"hook": hook_part, "alone": alone_part, "dw": dw_part}
    for part in s["parts"]:
        if part not in parts:
            raise ValueError(f"dassdp: unknown part {part!r}; choose from {', '.join(PARTS)}")
        parts[part](bench, s)
