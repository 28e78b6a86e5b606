"""Several processes on CPU (gloo) through `accelerate launch`: ranks stay bit-identical with hooks on."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from launch_toy import REAL_ARGS, TOY_ARGS
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = [str(Path(sys.executable).with_name("accelerate")), "launch"]
ENTRY = str(Path(__file__).with_name("launch_toy_entry.py"))
COMMON = ["--mixed_precision", "no", "--dynamo_backend", "no"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def args(out: Path, epochs: int = 1) -> list[str]:
    return [*TOY_ARGS, f"train.epochs={epochs}", "dassdp.enabled=true", "train.save_rank_weights=true",
            "log.progress=false", "train.eval_batches=1", "--output-dir", str(out)]


def check_ranks(out: Path, steps: int, hook: str = "toy") -> None:
    w0, w1 = load_file(str(out / "final_rank0.safetensors")), load_file(str(out / "final_rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks_consistent"] is True and summary["steps"] == steps
    last = torch.load(out / "checkpoints/last.pt", weights_only=True)
    if hook == "toy":
        assert int(last["hooks"]["toy"]["calls"]) == steps
    else:  # DA-SSDP: gate fitted after 2 warm-up steps, dW applied (all-reduced) on the remaining ones
        assert last["hooks"]["dassdp"]["fitted"] and last["hooks"]["dassdp"]["applied_steps"] == steps - 2
    assert len(last["rng"]) == 2


def test_two_processes_with_dassdp_stay_identical(tmp_path):
    """spikingresformer_tiny + the real DASSDPHook on 2 CPU processes: both ranks end bit-identical."""
    out = tmp_path / "run"
    cmd = [*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port()),
           *COMMON, ENTRY, "--parts", "model=real,hook=real", *args(out), *REAL_ARGS, "dassdp.warmup_steps=2"]
    done = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gloo threads left: 0") == 2, done.stdout[-3000:]
    assert "Grad strides do not match bucket view strides" not in done.stderr  # channels-last params
    check_ranks(out, steps=4, hook="dassdp")  # 64 samples / 2 ranks / batch 8 = 4 steps per epoch


def test_two_machines_train_together(tmp_path):
    out, port = tmp_path / "run", str(free_port())
    procs = [subprocess.Popen(
        [*ACCELERATE, "--multi_gpu", "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(r),
         "--main_process_ip", "127.0.0.1", "--main_process_port", port, *COMMON, ENTRY, *args(out)],
        env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-2000:] for x in logs)
    assert [x.count("gloo threads left: 0") for x in logs] == [1, 1], "\n".join(x[-2000:] for x in logs)
    check_ranks(out, steps=4)
