"""Mode `model`: train-step and forward-only images/s and peak memory, ours vs the official code.

One configuration = variant, resolution, T, batch, dtype (written "name:res:T:B:dtype"). Our model is built
as the trainer builds it (`models.build_model(ModelConfig(...))`, defaults included: `sparse_conv` auto, the
event-driven convolutions per layer); the eager model and `torch.compile` of it (`compile`), with
`compare_dense` also the same with every convolution dense (cases `*_dense`), are timed interleaved,
training step (forward + loss on the T-mean + backward + AdamW + neuron reset) and inference forward
separately. With `official` on (CPU, one step per repeat) the official SpikingResformer joins the training
comparison from a worker process (tools/bench/official.py: the official code outside this repo, found from
--official PATH or $DASSDP_OFFICIAL, with its own spikingjelly 0.0.0.0.14), eager and, with `compile`,
compiled; ratios are taken to the official case of the same mode. `malloc_reuse` keeps freed memory in the
heap in both processes (launch/cpu_malloc.py: what the trainer does on CPU).
"""
from __future__ import annotations

import copy

import torch

from tools.bench.harness import Bench, PeakMemory, timed
from tools.bench.official import OfficialWorker, find_official
from tools.bench.stepper import Stepper, synthetic_batch, trainer_model

FULL = {"configs": ["spikingresformer_cifar:32:4:32:fp32", "spikingresformer_cifar:32:4:32:bf16",
                    "spikingresformer_ti:224:4:8:fp32", "spikingresformer_ti:224:4:8:bf16"],
        "compile": True, "sparse_conv": "auto", "compare_dense": False, "official": True,
        "malloc_reuse": False, "steps_per_repeat": 1, "warmup": 2, "repeats": 5, "forward": True,
        "channels_last": True, "neuron_shapes": ["4x16x64x56x56"]}
# quick: no official run (it needs the official code set up, see docs/benchmarks.md)
QUICK = {**FULL, "configs": ["spikingresformer_cifar:32:4:8:fp32"], "compile": False, "official": False,
         "repeats": 3, "warmup": 1, "neuron_shapes": ["4x8x64x32x32"]}


def parse_config(text: str) -> dict:
    """'name:res:T:B:dtype' -> dict with the variant's class count (a clear error for anything else)."""
    parts = text.split(":")
    if len(parts) != 5:
        raise ValueError(f"model: config {text!r} must be name:res:T:B:dtype, "
                         "e.g. spikingresformer_ti:224:4:8:bf16")
    name, res, T, B, dtype = parts
    from models import ARCHS

    if name not in ARCHS:
        raise ValueError(f"model: config {text!r}: unknown variant {name!r}; choose from {sorted(ARCHS)}")
    return {"name": name, "res": int(res), "T": int(T), "B": int(B), "dtype": dtype,
            "classes": ARCHS[name].num_classes}


def model_sparse_conv(text: str) -> bool | str:
    """The `sparse_conv` setting as ModelConfig takes it: auto, true or false."""
    value = {"auto": "auto", "true": True, "false": False}.get(str(text).lower())
    if value is None:
        raise SystemExit(f"--set sparse_conv={text}: write auto, true or false")
    return value


def build(c: dict, s: dict, device: torch.device, sparse_conv: bool | str = "auto") -> torch.nn.Module:
    """Our model for one configuration, built as the trainer builds it (models.build_model), on `device`."""
    from models.config import ModelConfig

    cfg = ModelConfig(name=c["name"], T=c["T"], num_classes=c["classes"], img_size=c["res"], in_channels=3,
                      channels_last=s["channels_last"], sparse_conv=sparse_conv)
    return trainer_model(cfg, device)


def steppers(c: dict, s: dict, device: torch.device) -> dict[str, Stepper]:
    """eager / compiled (and *_dense) steppers for one configuration, each with its own weights."""
    from models import compile_model

    out = {}
    variants = [("", model_sparse_conv(s["sparse_conv"]))]
    if s["compare_dense"]:
        variants.append(("_dense", False))
    for suffix, sparse in variants:
        torch.manual_seed(0)
        model = build(c, s, device, sparse_conv=sparse)
        out["eager" + suffix] = Stepper(model, dtype=c["dtype"])
        if s["compile"]:
            twin = copy.deepcopy(model)
            out["compiled" + suffix] = Stepper(twin, dtype=c["dtype"], forward_model=compile_model(twin))
    return out


def official_cases(bench: Bench, worker: OfficialWorker, c: dict, s: dict, label: str) -> dict:
    """{"official": case[, "official_compiled": case]} for the cells the official code can build."""
    out = {}
    for name, compile in (("official", False), ("official_compiled", True))[: 2 if s["compile"] else 1]:
        req = {"variant": c["name"], "B": c["B"], "T": c["T"], "px": c["res"], "classes": c["classes"],
               "dtype": c["dtype"], "compile": compile, "steps": 0, "warmup": 0}
        probe = worker.ask(req)  # builds the cell (and its settle steps) before anything is timed
        if probe.get("ok"):
            out[name] = worker.case(c, compile)
        else:
            bench.notes.append(f"model {label}: no {name} run: {probe.get('error')}")
    return out


def run_config(bench: Bench, c: dict, s: dict) -> None:
    """Time one configuration: training step (with the official code when asked) and forward."""
    dev = bench.device
    st = steppers(c, s, dev)
    x, y = synthetic_batch(c["B"], 3, c["res"], c["classes"], dev, channels_last=s["channels_last"])
    label = f"{c['name']} {c['res']}px T={c['T']} B={c['B']} {c['dtype']}"
    extra = {"label": label, "config": c}
    n = s["steps_per_repeat"]
    train = {k: _images(v.case(x, y, n), c["B"]) for k, v in st.items()}
    worker = None
    if s["official"] and dev.type == "cpu" and n == 1:
        from launch.cpu_malloc import ENV

        worker = OfficialWorker(s["official_path"], ENV if s["malloc_reuse"] else None)
    elif s["official"]:
        bench.notes.append(f"model {label}: no official run (it runs on CPU with steps_per_repeat=1)")
    try:
        official = official_cases(bench, worker, c, s, label) if worker else {}
        if worker and worker.spikingjelly:
            bench.notes.append(f"official worker: spikingjelly {worker.spikingjelly}, {s['official_path']}")
        for group, base in _groups({**train, **official}):
            bench.compare(group, metric="train_images_per_s", unit="images/s", warmup=s["warmup"],
                          repeats=s["repeats"], baseline=base, **extra)
    finally:
        if worker:
            worker.close()
    if s["forward"]:
        fwd = {k: _forward_case(v, x, n) for k, v in st.items()}
        bench.compare(fwd, metric="forward_images_per_s", unit="images/s", warmup=s["warmup"],
                      repeats=s["repeats"], baseline="eager" if len(fwd) > 1 else None, **extra)
    for k, v in st.items():
        with PeakMemory(dev) as pm:
            timed(v.case(x, y, 1), dev)
        bench.add(k, "train_peak_memory", "MiB", [pm.mib], memory_method=pm.method, **extra)


def _groups(cases: dict) -> list[tuple[dict, str | None]]:
    """Cases to compare and their baseline: with the official code, eager cases against `official` and
    compiled ones against `official_compiled`; without it, everything against `eager`."""
    if not any(k.startswith("official") for k in cases):
        return [(cases, "eager" if len(cases) > 1 else None)]
    out = []
    for base in ("official", "official_compiled"):
        mode = "compiled" if base.endswith("compiled") else "eager"
        group = {k: v for k, v in cases.items() if k == base or k.startswith(mode)}
        if base in group:
            out.append((group, base))
        elif group:
            out.append((group, None))
    return out


def _images(case, B: int):
    """Turn a steps-counting case into an images-counting one."""
    def run() -> int:
        return case() * B
    return run


def _forward_case(st: Stepper, x: torch.Tensor, n: int):
    def run() -> int:
        for _ in range(n):
            st.forward(x)
        return n * x.shape[0]
    return run


def _neuron_case(neuron: torch.nn.Module, x: torch.Tensor, stepwise: bool):
    """Forward + backward of one multi-step neuron layer; returns the number of neuron updates (T*N)."""
    from spikingjelly.activation_based.functional import reset_net

    def run() -> int:
        if stepwise:  # spikingjelly's single-step path, one Python call per time step
            out = torch.stack([neuron(x[t]) for t in range(x.shape[0])])  # [T, B, C, H, W]
        else:
            out = neuron(x)  # [T, B, C, H, W]
        out.sum().backward()
        reset_net(neuron)
        return x.numel()
    return run


def run_neurons(bench: Bench, shape: str) -> None:
    """models.neurons.LIF (CPU: the fused C kernel, models/lif_cpu.py; CUDA: spikingjelly's Triton kernel)
    vs spikingjelly's per-step loop."""
    from spikingjelly.activation_based import neuron, surrogate

    from models.neurons import LIF

    T, B, C, H, W = (int(v) for v in shape.lower().split("x"))
    x = torch.randn(T, B, C, H, W, device=bench.device).mul_(2).requires_grad_(True)  # [T, B, C, H, W]
    ref = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=True,
                         surrogate_function=surrogate.ATan(alpha=2.0), step_mode="s")
    cases = {"lif_kernel": _neuron_case(LIF().to(bench.device), x, False),
             "lif_stepwise": _neuron_case(ref.to(bench.device), x, True)}
    bench.compare(cases, metric="neuron_updates_per_s", unit="updates/s", warmup=1, repeats=3,
                  baseline="lif_stepwise", label=f"LIF fwd+bwd [T,B,C,H,W]={shape} fp32")


def run(bench: Bench, s: dict, cache) -> None:
    """Every configuration in turn (the official folder is checked before anything is timed)."""
    configs = [parse_config(text) for text in s["configs"]]
    if s["official"] and configs and bench.device.type == "cpu" and s["steps_per_repeat"] == 1:
        s = {**s, "official_path": find_official(s.get("official_path"))}
    if s["malloc_reuse"]:
        from launch.cpu_malloc import keep_freed_memory

        if not keep_freed_memory():
            bench.notes.append("malloc_reuse: not glibc, the allocator was left alone")
    for c in configs:
        run_config(bench, c, s)
    for shape in s["neuron_shapes"]:
        run_neurons(bench, shape)
