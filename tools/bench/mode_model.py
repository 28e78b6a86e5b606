"""Mode `model`: train-step and forward-only images/s and peak memory, eager vs compiled.

One configuration = variant, resolution, T, batch, dtype (written "name:res:T:B:dtype"). For each one the
eager model and (when `compile` is on) `torch.compile` of the same model are timed interleaved, training
step (forward + backward + AdamW + neuron reset) and inference forward separately. When `official` is on
and `models.bench` can build the official implementation, it joins as a third case (same batch, dtype).
"""
from __future__ import annotations

import copy

import torch

from tools.bench.harness import Bench, PeakMemory, timed
from tools.bench.stepper import Stepper, synthetic_batch

FULL = {"configs": ["spikingresformer_cifar:32:4:32:fp32", "spikingresformer_cifar:32:4:32:bf16",
                    "spikingresformer_ti:224:4:8:fp32", "spikingresformer_ti:224:4:8:bf16"],
        "compile": True, "official": True, "num_classes": 10, "steps_per_repeat": 1, "warmup": 2,
        "repeats": 5, "forward": True}
QUICK = {**FULL, "configs": ["spikingresformer_cifar:32:4:8:fp32"], "compile": False, "repeats": 3,
         "warmup": 1}


def parse_config(text: str) -> dict:
    """'name:res:T:B:dtype' -> dict (a clear error for anything else)."""
    parts = text.split(":")
    if len(parts) != 5:
        raise ValueError(f"model: config {text!r} must be name:res:T:B:dtype, "
                         "e.g. spikingresformer_ti:224:4:8:bf16")
    name, res, T, B, dtype = parts
    return {"name": name, "res": int(res), "T": int(T), "B": int(B), "dtype": dtype}


def build(c: dict, num_classes: int, device: torch.device) -> torch.nn.Module:
    """Our model for one configuration, channels-last on `device`."""
    from models import build_model
    from models.config import ModelConfig

    cfg = ModelConfig(name=c["name"], T=c["T"], num_classes=num_classes, img_size=c["res"], in_channels=3)
    return build_model(cfg).to(device).to(memory_format=torch.channels_last)


def official(c: dict, num_classes: int, device: torch.device) -> torch.nn.Module | None:
    """The official implementation through models.bench (None when it is not available here)."""
    try:
        from models import bench as mbench
    except ImportError:
        return None
    make = getattr(mbench, "build_official", None)
    if make is None:
        return None
    return make(c["name"], T=c["T"], num_classes=num_classes, img_size=c["res"], device=device)


def steppers(c: dict, s: dict, device: torch.device) -> dict[str, Stepper]:
    """eager / compiled / official steppers for one configuration (compiled shares nothing with eager)."""
    torch.manual_seed(0)
    model = build(c, s["num_classes"], device)
    out = {"eager": Stepper(model, dtype=c["dtype"])}
    if s["compile"]:
        twin = copy.deepcopy(model)
        out["compiled"] = Stepper(twin, dtype=c["dtype"], forward_model=torch.compile(twin))
    if s["official"]:
        ref = official(c, s["num_classes"], device)
        if ref is not None:
            out["official"] = Stepper(ref, dtype=c["dtype"])
    return out


def run_config(bench: Bench, c: dict, s: dict) -> None:
    """Time one configuration: training step and forward, interleaved, then peak memory."""
    dev = bench.device
    st = steppers(c, s, dev)
    if s["official"] and "official" not in st:
        bench.notes.append("model: no official implementation here (models.bench.build_official)")
    x, y = synthetic_batch(c["B"], 3, c["res"], s["num_classes"], dev)
    label = f"{c['name']} {c['res']}px T={c['T']} B={c['B']} {c['dtype']}"
    extra = {"label": label, "config": c}
    n = s["steps_per_repeat"]
    train = {k: _images(v.case(x, y, n), c["B"]) for k, v in st.items()}
    base = "official" if "official" in st else "eager"
    bench.compare(train, metric="train_images_per_s", unit="images/s", warmup=s["warmup"],
                  repeats=s["repeats"], baseline=base, **extra)
    if s["forward"]:
        fwd = {k: _forward_case(v, x, n) for k, v in st.items()}
        bench.compare(fwd, metric="forward_images_per_s", unit="images/s", warmup=s["warmup"],
                      repeats=s["repeats"], baseline=base, **extra)
    for k, v in st.items():
        with PeakMemory(dev) as pm:
            timed(v.case(x, y, 1), dev)
        bench.add(k, "train_peak_memory", "MiB", [pm.mib], memory_method=pm.method, **extra)


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


def run(bench: Bench, s: dict, cache) -> None:
    """Every configuration in turn."""
    for text in s["configs"]:
        run_config(bench, parse_config(text), s)
