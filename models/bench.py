"""Train-step throughput, ours vs the official SpikingResformer, side by side: `python -m models.bench`.

A train step is forward + cross-entropy on the T-mean of the logits + backward + AdamW step + neuron
reset, on random data. Two worker processes run the two implementations (they need different
spikingjelly versions); the parent sends them the same configurations alternately (ours, official, ours,
...) and prints images/s and the ratio. The official code is never part of this repo: it is run from
OFFICIAL_DIR (default /work/external) through `official_shim.py` there, with spikingjelly 0.0.0.0.14
(torch backend, installed with `pip install --target OFFICIAL_DIR/sj014 spikingjelly==0.0.0.0.14`)
shadowing spikingjelly 2.0. See docs in models/README.md for the set-up commands.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# Untimed steps when a worker first builds a cell, before its first warmup: compiled graphs settle there
# (the official code compiles a second graph on its second step, about 10 s here).
SETTLE = 2
CONFIGS = {  # name -> (variant, batch, T, px, classes)
    "cifar": ("spikingresformer_cifar", 32, 4, 32, 10),
    "ti": ("spikingresformer_ti", 8, 4, 224, 1000),
}


def _build(impl: str, variant: str, T: int, px: int, classes: int):
    import torch

    if impl.startswith("ours"):
        import models

        m = models.create(variant, T=T, img_size=px, num_classes=classes, sparse_conv=impl == "ours-sparse")
        m = m.to(memory_format=torch.channels_last)
        from spikingjelly.activation_based.functional import reset_net
    else:
        sys.path.insert(0, os.environ.get("OFFICIAL_DIR", "/work/external"))
        from official_shim import build_official  # type: ignore[import-not-found]
        from spikingjelly.activation_based.functional import reset_net

        m = build_official(variant, T=T, img_size=px, num_classes=classes)
    return m, reset_net


def _worker(impl: str) -> None:
    """Serve JSON requests on stdin: build (cached), time `steps` train steps after `warmup`."""
    import torch

    torch.manual_seed(0)
    cache: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (req["config"], req["dtype"], req["compile"])
        try:
            if key not in cache:
                cache[key] = _make_step(impl, req)
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
            out = {"ok": True, "times": times}
        except Exception as e:  # noqa: BLE001 - reported to the parent as a failed cell
            out = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        print(json.dumps(out), flush=True)


def _make_step(impl: str, req: dict):
    import torch
    import torch.nn.functional as F

    variant, B, T, px, classes = CONFIGS[req["config"]]
    model, reset_net = _build(impl, variant, T, px, classes)
    model.train()
    fwd = torch.compile(model, dynamic=False) if req["compile"] else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(B, 3, px, px)
    if impl.startswith("ours"):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (B,))
    amp = req["dtype"] == "bf16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(fwd(x).mean(0).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        reset_net(model)

    return step


def _spawn(impl: str, official_dir: str, malloc_reuse: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if malloc_reuse:  # the same allocator settings for both implementations (launch/cpu_malloc.py)
        from launch.cpu_malloc import ENV

        env.update(ENV)
    if impl == "official":
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(official_dir, "sj014"), official_dir])
        env["OFFICIAL_DIR"] = official_dir
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", impl], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL, cwd=os.path.dirname(os.path.dirname(__file__)))


def _ask(proc: subprocess.Popen, req: dict) -> dict:
    try:
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    except OSError:  # broken pipe: the worker is gone
        line = ""
    if not line:
        return {"ok": False, "error": f"worker exited (code {proc.poll()}; killed for memory?)"}
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    """Run the side-by-side benchmark and print one row per configuration."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="cifar,ti", help=f"comma list of {sorted(CONFIGS)}")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--steps", type=int, default=2, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed steps per round (after a new cell's SETTLE steps, which compile)")
    p.add_argument("--rounds", type=int, default=2, help="alternations ours/official per cell")
    p.add_argument("--impls", default="ours,official",
                   help="comma list of ours, ours-sparse (sparse_conv on), official; each is compared with "
                        "the last one")
    p.add_argument("--malloc-reuse", action="store_true",
                   help="both workers keep freed memory in the heap (what the trainer does on CPU)")
    p.add_argument("--official-dir", default=os.environ.get("OFFICIAL_DIR", "/work/external"))
    p.add_argument("--worker", choices=["ours", "ours-sparse", "official"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(a.worker)
        return 0
    import torch

    impls = a.impls.split(",")
    procs = {i: _spawn(i, a.official_dir, a.malloc_reuse) for i in impls}
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; official: spikingjelly 0.0.0.0.14 (torch backend) via "
          f"{a.official_dir}/official_shim.py; steps={a.steps} warmup={a.warmup} (+{SETTLE} at build) "
          f"rounds={a.rounds}; "
          f"malloc: {'reuse freed memory (both)' if a.malloc_reuse else 'glibc default (both)'}")
    print(f"{'config':<8}{'dtype':<6}{'mode':<10}" + "".join(f"{i + ' img/s':>20}" for i in impls)
          + "".join(f"{i + '/' + impls[-1]:>22}" for i in impls[:-1]))
    for cfg in a.configs.split(","):
        for dtype in a.dtypes.split(","):
            for mode in a.modes.split(","):
                _cell(procs, impls, a, cfg, dtype, mode)
    for proc in procs.values():
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.wait(timeout=60)
    return 0


def _cell(procs: dict, impls: list[str], a, cfg: str, dtype: str, mode: str) -> None:
    B = CONFIGS[cfg][1]
    req = {"config": cfg, "dtype": dtype, "compile": mode == "compiled", "steps": a.steps,
           "warmup": a.warmup}
    times: dict[str, list[float]] = {i: [] for i in impls}
    errors: dict[str, str] = {}
    for _ in range(a.rounds):
        for i in impls:  # interleaved: ours, official, ours, official ...
            if i in errors:
                continue
            r = _ask(procs[i], req)
            if r["ok"]:
                times[i] += r["times"]
            else:
                errors[i] = r["error"]
    ips = {i: B / statistics.median(t) if t else None for i, t in times.items()}
    cols = "".join(f"{ips[i]:>20.2f}" if ips[i] else f"{'failed':>20}" for i in impls)
    base = ips[impls[-1]]
    ratio = "".join(f"{(f'{ips[i] / base:.2f}x' if ips[i] and base else '-'):>22}" for i in impls[:-1])
    print(f"{cfg:<8}{dtype:<6}{mode:<10}{cols}{ratio}", flush=True)
    for i, e in errors.items():
        print(f"#   {i} {cfg}/{dtype}/{mode} failed: {e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
