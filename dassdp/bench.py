"""`python -m dassdp.bench`: the DA-SSDP hook's cost, printed as figures (a benchmark, not a test).

1. The dW kernel alone at ImageNet-L shapes (B=16, T=4; classifier 1000x1024, Wproj 1024x1024): ours
   (`dassdp.functional.delta_w`) vs the naive [B, C_out, C_in] formulation, time and peak memory.
2. The hook's overhead on a spikingresformer_cifar training step (B=32, T=4, 32 px), off/on interleaved,
   plus the hook's own time (observers + after_optimizer_step) measured directly.

Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the peak of live tensor bytes allocated
inside the call, counted by a TorchDispatchMode (kernel-internal workspaces are not seen).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dassdp.config import DASSDPConfig
from dassdp.functional import delta_w, latency
from dassdp.hook import DASSDPHook
from dassdp.reference import delta_w_naive

HP = dict(a_plus=1.5e-3, a_minus=5e-4, sigma=1.0)


class _PeakBytes(TorchDispatchMode):
    """Peak of live bytes of tensors created inside the mode (storages of `exclude` not counted)."""

    def __init__(self, exclude=()):
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage ptr -> [bytes, live tensors]
        self.now = self.peak = 0
        self.skip = {t.untyped_storage().data_ptr() for t in exclude}

    def _free(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in self.skip or ptr == 0:
                continue
            if ptr not in self.live:
                self.live[ptr] = [t.untyped_storage().nbytes(), 0]
                self.now += self.live[ptr][0]
                self.peak = max(self.peak, self.now)
            self.live[ptr][1] += 1
            weakref.finalize(t, self._free, ptr)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # needs CUDA
        torch.cuda.synchronize(device)


def peak_bytes(fn, inputs, device: torch.device) -> int:
    """Peak memory a call of `fn()` adds above what is already allocated."""
    if device.type == "cuda":  # needs CUDA
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    mode = _PeakBytes(exclude=inputs)
    with mode:
        fn()
    return mode.peak


def time_call(fn, device: torch.device, reps: int, warmup: int = 2) -> list[float]:
    """Seconds per call, `reps` times after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def site_inputs(B: int, C_in: int, C_out: int, T: int, device, seed: int = 0, rate: float = 0.3):
    """Random pre/post spikes and last-spike latencies of one site."""
    g = torch.Generator().manual_seed(seed)
    s_pre = (torch.rand(T, B, C_in, generator=g) < rate).float().to(device)  # [T,B,C_in]
    s_post = (torch.rand(T, B, C_out, generator=g) < rate).float().to(device)  # [T,B,C_out]
    pre, post = (s_pre.sum(0) > 0).float(), (s_post.sum(0) > 0).float()
    gate = (torch.rand(B, generator=g) * 2).to(device)
    return pre, post, latency(s_pre, "last"), latency(s_post, "last"), gate


def bench_kernel(B: int = 16, T: int = 4, shapes=((1000, 1024), (1024, 1024)), reps: int = 5,
                 device: str = "cpu") -> list[dict]:
    """dW kernel, ours vs naive, per site shape: median seconds, peak bytes, max |difference|."""
    dev = torch.device(device)
    rows = []
    for C_out, C_in in shapes:
        pre, post, t_pre, t_post, gate = site_inputs(B, C_in, C_out, T, dev)
        ours = lambda: delta_w(pre, post, t_pre, t_post, gate=gate, T=T, **HP)  # noqa: B023
        naive = lambda: delta_w_naive(pre, post, t_pre, t_post, gate=gate, **HP)  # noqa: B023
        row = {"shape": f"{C_out}x{C_in}", "B": B, "T": T, "device": device,
               "max_abs_diff": float((ours() - naive()).abs().max())}
        for name, fn in (("ours", ours), ("naive", naive)):
            row[f"{name}_s"] = statistics.median(time_call(fn, dev, reps))
            row[f"{name}_peak_bytes"] = peak_bytes(fn, [pre, post, t_pre, t_post, gate], dev)
        row["time_ratio"] = row["naive_s"] / row["ours_s"]
        row["peak_ratio"] = row["naive_peak_bytes"] / max(row["ours_peak_bytes"], 1)
        rows.append(row)
    return rows


def _instrument(hook: DASSDPHook, spent: list[float], seen: list) -> None:
    """Add the observers' recording time to spent[0] and keep their inputs in `seen` (CPU only)."""
    for o in hook.observers:
        store = o._store

        def timed(side, x, store=store, o=o):
            t0 = time.perf_counter()
            store(side, x)
            spent[0] += time.perf_counter() - t0
            seen.append((store, side, x.detach()))

        o._store = timed


def _replay(hook: DASSDPHook, model, seen: list, loss, reps: int) -> list[float]:
    """Seconds of the hook alone (recording the captured site tensors + after_optimizer_step), reps times."""
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        for store, side, x in seen:
            store(side, x)
        with torch.no_grad():
            hook.after_optimizer_step(model, loss=loss, epoch=0, step=1000 + i)
        out.append(time.perf_counter() - t0)
    return out


def bench_step(model_name: str = "spikingresformer_cifar", B: int = 32, T: int = 4, img: int = 32,
               pairs: int = 3, device: str = "cpu") -> dict:
    """Training-step seconds with the hook off and on (interleaved), and the hook's own seconds."""
    from spikingjelly.activation_based import functional as sj_functional

    from models.spikingresformer import create

    dev = torch.device(device)
    torch.manual_seed(0)
    model = create(model_name, T=T, img_size=img).to(dev)
    for m in model.modules():  # channels-last convolutions, as the trainer runs them
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(B, 3, img, img, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (B,), device=dev)
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_steps=1))  # the rule acts from the 2nd step on
    spent, seen = [0.0], []

    def step(on: bool, n: int) -> tuple[float, float]:
        _sync(dev)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if on:
            with torch.no_grad():
                hook.after_optimizer_step(model, loss=loss.detach(), epoch=0, step=n)
        _sync(dev)
        t2 = time.perf_counter()
        sj_functional.reset_net(model)
        return t2 - t0, t2 - t1

    model.train()
    hook.setup(model, steps_per_epoch=1000)
    step(True, 0)  # first (warm-up) step, hook on: records the gate statistics; the rule acts from step 1
    off, on, own, n = [], [], [], 1
    for _ in range(pairs):
        hook.close()
        off.append(step(False, n)[0])
        hook.setup(model, steps_per_epoch=1000)
        if dev.type == "cpu":
            seen.clear()
            _instrument(hook, spent, seen)
        spent[0] = 0.0
        total, after = step(True, n)
        on.append(total)
        own.append(spent[0] + after)
        n += 1
    buffers = sum(b.numel() * b.element_size() for o in hook.observers for b in o.bufs.values())
    isolated = _replay(hook, model, seen, torch.tensor(2.3, device=dev), reps=20) if seen else [float("nan")]
    hook.close()
    med_off, med_on = statistics.median(off), statistics.median(on)
    return {"model": model_name, "B": B, "T": T, "img": img, "device": device, "pairs": pairs,
            "step_off_s": med_off, "step_on_s": med_on, "end_to_end_pct": 100 * (med_on - med_off) / med_off,
            "hook_own_s": statistics.median(own), "hook_own_pct": 100 * statistics.median(own) / med_off,
            "hook_isolated_s": statistics.median(isolated),
            "hook_isolated_pct": 100 * statistics.median(isolated) / med_off,
            "observer_buffer_bytes": buffers, "off_s": off, "on_s": on}


def bench_hook_alone(model_name: str = "spikingresformer_cifar", B: int = 32, T: int = 4, img: int = 32,
                     reps: int = 20, device: str = "cpu") -> dict:
    """The hook alone at the model's true site shapes (batch B, random signs), rule acting: median seconds.

    Cheap and steady where whole training steps are too slow or noisy to time: the site shapes come from
    one B=1 training forward, the recorded tensors are random with batch B.
    """
    from models.spikingresformer import create

    dev = torch.device(device)
    torch.manual_seed(0)
    model = create(model_name, T=T, img_size=img).to(dev).train()
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_steps=0))
    hook.setup(model, steps_per_epoch=1000)
    spent, seen = [0.0], []
    _instrument(hook, spent, seen)
    with torch.no_grad():
        model(torch.randn(1, 3, img, img, device=dev))
    g = torch.Generator(device=dev).manual_seed(0)
    seen = [(store, side, torch.randn(x.shape[0], B, *x.shape[2:], generator=g, device=dev))
            for store, side, x in seen]  # [T, B, ...] at the site's shape
    _replay(hook, model, seen, torch.tensor(2.3, device=dev), reps=2)  # warm-up
    times = _replay(hook, model, seen, torch.tensor(2.3, device=dev), reps=reps)
    hook.close()
    return {"model": model_name, "B": B, "T": T, "img": img, "device": device,
            "threads": torch.get_num_threads(), "hook_alone_s": statistics.median(times),
            "site_shapes": [f"{side}:{tuple(x.shape)}" for _, side, x in seen]}


def _mb(b: float) -> str:
    return f"{b / 2**20:8.2f} MB"


def report(kernel: list[dict], step: dict | None, alone: dict | None = None) -> str:
    """The figures as text."""
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads"]
    lines.append("dW kernel (B=16, T=4, ImageNet-L sites): ours vs naive [B,C_out,C_in]")
    for r in kernel:
        lines.append(f"  {r['shape']:>10}: time ours {1e3 * r['ours_s']:8.2f} ms  naive "
                     f"{1e3 * r['naive_s']:8.2f} ms  (x{r['time_ratio']:.1f});  peak ours "
                     f"{_mb(r['ours_peak_bytes'])}  naive {_mb(r['naive_peak_bytes'])}  "
                     f"(x{r['peak_ratio']:.0f});  max|diff| {r['max_abs_diff']:.1e}")
    if step:
        lines.append(f"hook on {step['model']} training step (B={step['B']}, T={step['T']}, "
                     f"{step['device']}, {step['pairs']} off/on pairs, medians):")
        lines.append(f"  step off {step['step_off_s']:.3f} s, on {step['step_on_s']:.3f} s "
                     f"(end to end {step['end_to_end_pct']:+.2f}%, within run-to-run noise)")
        lines.append(f"  hook's own time in the step {1e3 * step['hook_own_s']:.2f} ms = "
                     f"{step['hook_own_pct']:.3f}% of the step (goal <= 3%); alone, median of 20: "
                     f"{1e3 * step['hook_isolated_s']:.2f} ms = {step['hook_isolated_pct']:.3f}%")
        lines.append(f"  observer buffers {step['observer_buffer_bytes']} bytes "
                     "(the hook's only persistent memory besides 6 float64 sums per site)")
    if alone:
        share = f" = {100 * alone['hook_alone_s'] / step['step_off_s']:.3f}% of the step" if step else ""
        lines.append(f"hook alone on {alone['model']} site shapes (B={alone['B']}, T={alone['T']}, "
                     f"{alone['threads']} threads, rule acting, median of 20): "
                     f"{1e3 * alone['hook_alone_s']:.2f} ms per step{share}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """CLI entry: print the figures (and write JSON with --json)."""
    p = argparse.ArgumentParser(prog="python -m dassdp.bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=5, help="kernel repetitions (median)")
    p.add_argument("--pairs", type=int, default=3, help="off/on training-step pairs (median)")
    p.add_argument("--quick", action="store_true", help="kernel 3 reps, 1 step pair")
    p.add_argument("--no-step", action="store_true", help="kernel and hook alone only (no training steps)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    reps, pairs = (3, 1) if a.quick else (a.reps, a.pairs)
    kernel = bench_kernel(reps=reps, device=a.device)
    alone = bench_hook_alone(device=a.device)
    step = None if a.no_step else bench_step(pairs=pairs, device=a.device)
    print(report(kernel, step, alone))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"kernel": kernel, "step": step, "hook_alone": alone}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
