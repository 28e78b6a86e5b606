"""Mode `dassdp`: the DA-SSDP hook's overhead on a training step, and dW ours vs the naive form.

Part 1 (`hook`): two copies of the same model, one with `dassdp.DASSDPHook` attached (observers + the
update after every optimizer step, warm-up over after one step) and one without, trained step by step
interleaved dassdp_on, dassdp_off, dassdp_on, ... The ratio of step times is the overhead.
Part 2 (`dw`): `dassdp.functional.delta_w` vs `dassdp.reference.delta_w_naive` (the authors'
[B, C_out, C_in] form) at ImageNet-L site shapes, time and peak memory, interleaved.
"""
from __future__ import annotations

import copy
import time

import torch

from tools.bench.harness import Bench, PeakMemory, timed
from tools.bench.stepper import Stepper, synthetic_batch

# dw_rate 0.3 as dassdp.bench.site_inputs' default
FULL = {"model": "spikingresformer_cifar", "img_size": 32, "T": 4, "batch_size": 32, "num_classes": 10,
        "steps_per_repeat": 1, "repeats": 7, "warmup": 2, "parts": ["hook", "dw"],
        "dw_batch": 16, "dw_shapes": ["1000x1024", "1024x1024"], "dw_T": 4, "dw_rate": 0.3, "dw_repeats": 7}
QUICK = {**FULL, "batch_size": 16, "repeats": 3, "warmup": 1, "dw_repeats": 3}


def _model(s: dict, device: torch.device) -> torch.nn.Module:
    from models import build_model
    from models.config import ModelConfig

    cfg = ModelConfig(name=s["model"], T=s["T"], num_classes=s["num_classes"], img_size=s["img_size"],
                      in_channels=3, channels_last=True)
    return build_model(cfg).to(device)


def time_observers(hook) -> list[float] | None:
    """Wrap each site observer's recording call to add its seconds to a counter (CPU: no async work).

    Uses the observers' `_store` method (dassdp internals); returns None when they are not there.
    """
    observers = getattr(hook, "observers", None)
    if not observers or not all(hasattr(o, "_store") for o in observers):
        return None
    spent = [0.0]
    for o in observers:
        store = o._store

        def timed(*args, store=store, **kwargs):
            t0 = time.perf_counter()
            store(*args, **kwargs)
            spent[0] += time.perf_counter() - t0

        o._store = timed
    return spent


def _own_time(case, stepper: Stepper, observer_s: list[float] | None, out: dict[str, list[float]]):
    """Wrap a dassdp_on case: after each call append ms per step of after_optimizer_step and of the
    hook's own work (observers + after_optimizer_step) to out["after"] and out["own"]."""
    def run() -> int:
        obs0, n_hook = (observer_s[0] if observer_s else 0.0), len(stepper.hook_seconds)
        n = case()
        after = sum(stepper.hook_seconds[n_hook:])
        obs = (observer_s[0] - obs0) if observer_s else 0.0
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
    observer_s = time_observers(hook) if dev.type == "cpu" else None
    own_ms: dict[str, list[float]] = {"after": [], "own": []}  # per call: ms per step
    cases["dassdp_on"] = _own_time(cases["dassdp_on"], steppers["dassdp_on"], observer_s, own_ms)
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
    if observer_s is not None:
        bench.add("dassdp_on", "hook_own_time", "ms/step", own, label=label,
                  what="observers' recording in the forward + after_optimizer_step")
        off_ms = samples["dassdp_off"]
        bench.add("dassdp_on", "hook_own_share", "%", [100 * a / b for a, b in zip(own, off_ms)], label=label,
                  what="hook_own_time / the same round's dassdp_off step time")
    applied = steppers["dassdp_on"].metrics
    bench.notes.append(f"dassdp hook metrics after the last step: "
                       f"{ {k: float(v) for k, v in applied.items()} }")


def _calls(fn, **kwargs):
    """A harness case calling fn(**kwargs) once (one item)."""
    def run() -> int:
        fn(**kwargs)
        return 1
    return run


def dw_part(bench: Bench, s: dict) -> None:
    """delta_w (ours) vs delta_w_naive at each shape: time per call, peak memory, max difference."""
    from dassdp.bench import site_inputs
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
    """Run the requested parts (hook, dw)."""
    for part in s["parts"]:
        if part not in ("hook", "dw"):
            raise ValueError(f"dassdp: unknown part {part!r}; choose from hook, dw")
        (hook_part if part == "hook" else dw_part)(bench, s)
