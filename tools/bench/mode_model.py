"""Mode `model`: train-step and forward-only images/s and peak memory, eager vs compiled.

One configuration = variant, resolution, T, batch, dtype (written "name:res:T:B:dtype"). For each one the
eager model and (when `compile` is on) `torch.compile` of the same model are timed interleaved, training
step (forward + backward + AdamW + neuron reset) and inference forward separately. When `official` is on
and models.bench knows the same configuration (variant, batch, T, resolution), the official implementation
joins the training comparison through models.bench's worker process (its own spikingjelly 0.0.0.0.14, the
official code outside this repo, OFFICIAL_DIR), interleaved with ours; the ratio eager/official is recorded.
"""
from __future__ import annotations

import copy
import os

import torch

from tools.bench.harness import Bench, PeakMemory, timed
from tools.bench.stepper import Stepper, synthetic_batch

FULL = {"configs": ["spikingresformer_cifar:32:4:32:fp32", "spikingresformer_cifar:32:4:32:bf16",
                    "spikingresformer_ti:224:4:8:fp32", "spikingresformer_ti:224:4:8:bf16"],
        "compile": True, "official": True, "steps_per_repeat": 1, "warmup": 2,
        "repeats": 5, "forward": True, "channels_last": True, "neuron_shapes": ["4x16x64x56x56"]}
QUICK = {**FULL, "configs": ["spikingresformer_cifar:32:4:8:fp32"], "compile": False, "repeats": 3,
         "warmup": 1, "neuron_shapes": ["4x8x64x32x32"]}


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


def build(c: dict, s: dict, device: torch.device) -> torch.nn.Module:
    """Our model for one configuration (models.build_model; channels-last as configured) on `device`."""
    from models import build_model
    from models.config import ModelConfig

    cfg = ModelConfig(name=c["name"], T=c["T"], num_classes=c["classes"], img_size=c["res"], in_channels=3,
                      channels_last=s["channels_last"])
    return build_model(cfg).to(device)


class OfficialWorker:
    """The official implementation in a worker process of models.bench (its own spikingjelly 0.0.0.0.14).

    One case call = one training step timed from here (the pipe adds well under a millisecond).
    """

    def __init__(self, key: str):
        from models import bench as mbench

        self.mbench, self.key = mbench, key
        self.proc = mbench._spawn("official", os.environ.get("OFFICIAL_DIR", "/work/external"))

    @staticmethod
    def find(c: dict) -> str | None:
        """The models.bench config key equal to `c` (variant, batch, T, resolution), or None."""
        try:
            from models import bench as mbench
        except ImportError:
            return None
        for key, (variant, B, T, px, _) in mbench.CONFIGS.items():
            if (variant, B, T, px) == (c["name"], c["B"], c["T"], c["res"]):
                return key
        return None

    def case(self, dtype: str, images: int):
        """A harness case: one official training step; returns the number of images."""
        req = {"config": self.key, "dtype": dtype, "compile": False, "steps": 1, "warmup": 0}

        def run() -> int:
            out = self.mbench._ask(self.proc, req)
            if not out.get("ok"):
                raise RuntimeError(f"official worker failed: {out.get('error')}")
            return images
        return run

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def steppers(c: dict, s: dict, device: torch.device) -> dict[str, Stepper]:
    """eager / compiled steppers for one configuration (compiled is a separate copy of the weights)."""
    from models import compile_model

    torch.manual_seed(0)
    model = build(c, s, device)
    out = {"eager": Stepper(model, dtype=c["dtype"])}
    if s["compile"]:
        twin = copy.deepcopy(model)
        out["compiled"] = Stepper(twin, dtype=c["dtype"], forward_model=compile_model(twin))
    return out


def run_config(bench: Bench, c: dict, s: dict) -> None:
    """Time one configuration: training step (with the official code if it matches) and forward."""
    dev = bench.device
    st = steppers(c, s, dev)
    x, y = synthetic_batch(c["B"], 3, c["res"], c["classes"], dev, channels_last=s["channels_last"])
    label = f"{c['name']} {c['res']}px T={c['T']} B={c['B']} {c['dtype']}"
    extra = {"label": label, "config": c}
    n = s["steps_per_repeat"]
    train = {k: _images(v.case(x, y, n), c["B"]) for k, v in st.items()}
    key = OfficialWorker.find(c) if s["official"] and dev.type == "cpu" and n == 1 else None
    worker = OfficialWorker(key) if key else None
    if worker:
        train["official"] = worker.case(c["dtype"], c["B"])
    elif s["official"]:
        bench.notes.append(f"model {label}: no official run (models.bench.CONFIGS has no such configuration)")
    try:
        bench.compare(train, metric="train_images_per_s", unit="images/s", warmup=s["warmup"],
                      repeats=s["repeats"], baseline="official" if worker else "eager", **extra)
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
    """Every configuration in turn."""
    for text in s["configs"]:
        run_config(bench, parse_config(text), s)
    for shape in s["neuron_shapes"]:
        run_neurons(bench, shape)
