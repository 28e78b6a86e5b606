"""One run per output folder (run.lock) and a damaged `last.pt` survived by falling back to a good one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults_tally
import launch_toy as toy
import pytest
import torch
from test_faults_kill import ARGS, N_SAMPLES

from launch.checkpoint import load_checkpoint
from launch.runlock import LOCK_NAME

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture
def train(monkeypatch):
    """The real entry point in this process on the in-memory loader; `real` keeps the tiny real model."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from launch.train import main

    def go(out, *overrides, real=False):
        kinds = dict(model="real", hook="real") if real else {}
        toy.install(monkeypatch, n=N_SAMPLES, **kinds)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        args = ARGS if real else [*toy.TOY_ARGS, "train.epochs=2", "log.progress=false"]
        return main([*args, "--output-dir", str(out), *overrides])

    return go


def _blocked_run(out: Path, gate: Path) -> subprocess.Popen:
    """A real training run in its own process, held at its 2nd step until `gate` exists."""
    env = {**os.environ, "FAULTS_BLOCK": f"2:{gate}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(HERE / "faults_signal_entry.py"), *ARGS, "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not Path(f"{gate}.waiting").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    return proc


def test_one_run_per_folder_and_stale_lock_taken_over(tmp_path, train, capsys):
    out, gate = tmp_path / "run", tmp_path / "go"
    first = _blocked_run(out, gate)
    holder = json.loads((out / LOCK_NAME).read_text())
    capsys.readouterr()
    t0 = time.monotonic()
    rc = train(out, real=True)
    err, took = capsys.readouterr().err, time.monotonic() - t0
    lines = [x for x in err.splitlines() if "in use by another run" in x]
    ok = rc == 2 and len(lines) == 1 and f"pid {first.pid}" in lines[0] and holder["host"] in lines[0]
    ok &= "Traceback" not in err and not (out / "checkpoints" / "best.pt").exists()
    faults_tally.hostile("second run on a folder in use", ok)
    assert ok, (rc, took, err[-1500:])
    # read-only uses need no lock: evaluation of the checkpoint written so far, the resolved config
    assert train(out, "--test-only", "--resume", "auto", real=True) == 0
    assert train(out, "--print-config", real=True) == 0
    gate.write_text("")
    log = first.communicate(timeout=300)[0]
    assert first.returncode == 0, log[-3000:]
    assert not (out / LOCK_NAME).exists()  # released at the end

    killed = tmp_path / "killed"
    second = _blocked_run(killed, tmp_path / "never")
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert json.loads((killed / LOCK_NAME).read_text())["pid"] == second.pid  # left behind
    capsys.readouterr()
    rc = train(killed, "--resume", "auto", real=True)
    err = capsys.readouterr().err
    ok = rc == 0 and f"taking over the stale lock {killed / LOCK_NAME}" in err and f"pid {second.pid}" in err
    ok &= not (killed / LOCK_NAME).exists()
    faults_tally.fault("lock left by a SIGKILLed run taken over", ok)
    assert ok, (rc, err[-1500:])


def _damage_last(out: Path, how: str) -> None:
    last = out / "checkpoints" / "last.pt"
    if how == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:  # bit rot the zip reader does not see: a changed weight under the old digest
        sd = torch.load(last, weights_only=True)
        sd["model"]["classifier.weight"][0, 0] += 1.0
        torch.save(sd, last)


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_damaged_last_falls_back_to_previous_good(tmp_path, train, capsys, how):
    assert train(tmp_path / "ref") == 0
    want = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]
    out = tmp_path / "run"
    assert train(out, "train.save_every_steps=1", "train.stop_after_steps=3") == 0
    ckpts = out / "checkpoints"
    assert load_checkpoint(ckpts / "last.prev.pt")["step"] == 2
    _damage_last(out, how)
    evidence = (ckpts / "last.pt").read_bytes()
    capsys.readouterr()
    rc = train(out, "--resume", "auto")
    err = "".join(capsys.readouterr())  # acc.print writes to stdout
    got = load_checkpoint(ckpts / "last.pt")["model"]
    kept = [p.read_bytes() for p in ckpts.glob("last.pt.damaged-*")]
    ok = rc == 0 and f"resuming from {ckpts / 'last.prev.pt'} (step 2)" in err and kept == [evidence]
    ok &= all(torch.equal(got[k], want[k]) for k in want)
    ok &= load_checkpoint(ckpts / "last.prev.pt")["step"] > 2  # a good one, never the damaged file
    faults_tally.fault(f"{how} last.pt: resumed from the previous good checkpoint", ok)
    assert ok, (rc, err[-1500:], len(kept))


def test_no_good_checkpoint_left_is_one_line(tmp_path, train, capsys):
    out = tmp_path / "run"
    assert train(out, "train.save_every_steps=1", "train.stop_after_steps=2") == 0
    for name in ("last.pt", "last.prev.pt"):
        p = out / "checkpoints" / name
        p.write_bytes(p.read_bytes()[:1000])
    capsys.readouterr()
    rc = train(out, "--resume", "auto")
    err = capsys.readouterr().err.strip().splitlines()
    ok = rc == 2 and "no usable checkpoint" in err[-1] and "last.prev.pt" in err[-1]
    ok &= not any("Traceback" in x for x in err)
    faults_tally.hostile("last.pt and last.prev.pt both damaged", ok)
    assert ok, (rc, err[-5:])
