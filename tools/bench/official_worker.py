"""The official SpikingResformer's training step, served to `tools/bench/official.py` over a pipe.

Run as a script in its own process with PYTHONPATH=OFFICIAL/sj014:OFFICIAL (set by official.py), so that the
official code gets its own spikingjelly (0.0.0.0.14) and its own `models` package without ever meeting this
repository's. Imports nothing of this repository. One JSON request per stdin line
({variant, B, T, px, classes, dtype, compile, steps, warmup}); one JSON answer per line:
{"ok": true, "times": [seconds per step], "spikingjelly": version} or {"ok": false, "error": one line}.
"""
from __future__ import annotations

import json
import os
import sys
import time

# Untimed steps when the worker first builds a cell, before any warm-up: the official code compiles a
# second graph on its second step (about 10 s on a 2-core CPU).
SETTLE = 2


def make_step(req: dict):
    """A zero-argument training step: forward, cross-entropy on the T-mean, backward, AdamW, reset."""
    import torch
    import torch.nn.functional as F
    from official_shim import build_official  # type: ignore[import-not-found]
    from spikingjelly.activation_based.functional import reset_net

    model = build_official(req["variant"], T=req["T"], img_size=req["px"], num_classes=req["classes"])
    model.train()
    fwd = torch.compile(model, dynamic=False) if req["compile"] else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(req["B"], 3, req["px"], req["px"])  # [B, 3, H, W]
    y = torch.randint(0, req["classes"], (req["B"],))  # [B]
    amp = req["dtype"] == "bf16"  # the official AMP is CUDA-only: bf16 autocast is ours, on its model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(fwd(x).mean(0).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        reset_net(model)

    return step


def serve(lines) -> None:
    """Answer each request: build the cell once (plus SETTLE steps), then time `steps` after `warmup`."""
    import spikingjelly
    import torch

    torch.manual_seed(0)
    cache: dict = {}
    sj_version = getattr(spikingjelly, "__version__", "unknown")
    for line in lines:
        req = json.loads(line)
        key = tuple(req[k] for k in ("variant", "B", "T", "px", "classes", "dtype", "compile"))
        try:
            if key not in cache:
                cache[key] = make_step(req)
                for _ in range(SETTLE):
                    cache[key]()
            step = cache[key]
            for _ in range(req["warmup"]):
                step()
            times = []
            for _ in range(req["steps"]):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            out = {"ok": True, "times": times, "spikingjelly": sj_version}
        except Exception as e:  # noqa: BLE001 - reported to the parent as a failed cell
            first = (str(e).splitlines() or [""])[0][:200]
            out = {"ok": False, "error": f"{type(e).__name__}: {first}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        sys.path.pop(0)  # this folder's modules (report, cli, ...) must not shadow the official code's
    serve(sys.stdin)
