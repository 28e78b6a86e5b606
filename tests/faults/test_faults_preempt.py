"""SIGTERM at seeded random points (1 and 2 CPU processes), time limits: exit 75, resume == uninterrupted."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import faults_tally
import pytest
import torch
from faults_helpers import in_child, install_counted_model
from test_faults_kill import ARGS, N_SAMPLES, _final_files_whole, _final_model

from launch.checkpoint import load_checkpoint
from launch.errors import EXIT_PREEMPTED

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Signaller:
    """Counts events per kind; SIGTERM to this process at the chosen (kind, n), and (`again`) once more
    during the next checkpoint write after it: the one the stop itself makes."""

    def __init__(self, point: tuple[str, int] | None = None, again: bool = False):
        self.point, self.again, self.n, self.sent, self.seq = point, again, {}, False, []

    def hit(self, kind: str) -> None:
        """Count one `kind` event; SIGTERM to self when it is the chosen one (or the save after it)."""
        self.n[kind] = self.n.get(kind, 0) + 1
        self.seq.append([kind, self.n[kind]])
        if (kind, self.n[kind]) == self.point or (self.again and self.sent and kind == "ckpt_write"):
            self.again = self.again and not self.sent
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _train(out: Path, sig: Signaller, resume: bool) -> int:
    """Child body: the real model and DA-SSDP hook, events counted (and signalled), the real entry point."""
    from launch import checkpoint
    from launch.train import main

    install_counted_model(N_SAMPLES, sig.hit)

    real_save = checkpoint.torch.save

    def save(obj, f, *a, **kw):
        sig.hit("ckpt_write")  # a signal now arrives while the checkpoint is being written
        real_save(obj, f, *a, **kw)

    checkpoint.torch.save = save
    rc = main([*ARGS, "--output-dir", str(out), *(["--resume", "auto"] if resume else [])])
    (out / "counts.json").write_text(json.dumps({"n": sig.n, "seq": sig.seq}))
    return rc


def _stop_and_resume(tmp_path: Path, name: str, point: tuple[str, int], want: dict, again: bool,
                     after_last_step: bool) -> None:
    out, log = tmp_path / name, tmp_path / f"{name}.log"
    rc = in_child(partial(_train, out, Signaller(point, again), False), log)
    text = log.read_text()
    stopped = rc == EXIT_PREEMPTED and "SIGTERM received: finishing the current step" in text  # child's fd 2
    finished = rc == 0 and after_last_step  # e.g. during the last evaluation: the run completes
    assert stopped or finished, f"{point}: rc {rc}: {text[-2500:]}"
    _final_files_whole(out)  # `last` whole, even with a second SIGTERM during its write
    if rc == EXIT_PREEMPTED:
        rc = in_child(partial(_train, out, Signaller(), True), log)
        assert rc == 0, f"{point}: resume failed: {log.read_text()[-3000:]}"
    got = _final_model(out)
    same = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    faults_tally.fault(f"train SIGTERM at {point[0]} #{point[1]}" + (" + one during the save" * again), same)
    assert same, f"{point}: resumed weights differ from the uninterrupted run"


def test_sigterm_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    rc = in_child(partial(_train, ref, Signaller(), False), tmp_path / "ref.log")
    assert rc == 0, (tmp_path / "ref.log").read_text()[-3000:]
    ref_events, want = json.loads((ref / "counts.json").read_text()), _final_model(ref)
    counts, seq = ref_events["n"], [tuple(e) for e in ref_events["seq"]]
    assert counts["step"] == 8 and counts["eval"] == 8, counts
    rng, last = random.Random(30), seq.index(("step", counts["step"]))
    plans = [(("step", rng.randint(1, counts["step"])), False),
             (("eval", rng.randint(1, counts["eval"])), False),
             (("ckpt_write", rng.choice([n for k, n in seq[:last] if k == "ckpt_write"])), False),
             (("step", rng.randint(1, counts["step"])), True)]  # + a second SIGTERM during the stop's save
    for i, (point, again) in enumerate(plans):
        _stop_and_resume(tmp_path, f"s{i}", point, want, again, seq.index(point) > last)


# ----------------------------------------------------------------------------- two processes
def test_sigterm_to_one_of_two_processes_then_resume_is_bit_identical(tmp_path):
    """SIGTERM reaches rank 1 only: both ranks stop at the same step, save, and the status is 75."""
    from test_launch_distributed import ACCELERATE, COMMON, env, free_port

    entry = str(HERE / "faults_signal_entry.py")

    def launch(out: Path, *extra: str, sigterm: str = "") -> tuple[int, str, int | None]:
        status = out.parent / f"{out.name}.status"
        status.unlink(missing_ok=True)
        e = {**env(), "DASSDP_EXIT_FILE": str(status), "FAULTS_SIGTERM": sigterm}
        cmd = [*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port()),
               *COMMON, entry, *ARGS, "train.epochs=2", "--output-dir", str(out), *extra]
        done = subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True, timeout=300)
        code = int(status.read_text()) if status.is_file() else None
        return done.returncode, done.stdout + done.stderr, code

    rc, log, code = launch(tmp_path / "ref")
    assert rc == 0 and code == 0, log[-3000:]
    want = _final_model(tmp_path / "ref")
    n = random.Random(31).randint(1, 3)  # 2 steps per epoch per rank
    out = tmp_path / "run"
    rc, log, code = launch(out, sigterm=f"1:{n}")
    ok = code == EXIT_PREEMPTED and log.count("SIGTERM received: stopped at step") == 2
    steps = {int(x.split("stopped at step ")[1].split()[0]) for x in log.splitlines()
             if "stopped at step" in x}
    assert ok and len(steps) == 1, f"rc {rc}, status {code}: {log[-3000:]}"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == steps.pop()
    rc, log, code = launch(out, "--resume", "auto")
    assert rc == 0 and code == 0, log[-3000:]
    got = _final_model(out)
    same = all(torch.equal(got[k], want[k]) for k in want)
    faults_tally.fault(f"SIGTERM to rank 1 of 2 at its step #{n}", same)
    assert same, "resumed 2-process weights differ from the uninterrupted run"


# ----------------------------------------------------------------------------- time limit
@pytest.fixture
def toy(monkeypatch):
    """The real entry point with the stand-in parts, in this process; returns the exit status."""
    import launch_toy
    from launch_toy import TOY_ARGS

    from launch.train import main

    def go(out, *overrides):
        from accelerate.state import AcceleratorState, GradientState, PartialState

        launch_toy.install(monkeypatch, n=32)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        return main([*TOY_ARGS, "log.progress=false", "train.epochs=2", "--output-dir", str(out), *overrides])

    return go


def _weights(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def test_time_limit_and_slurm_end_stop_resumably(tmp_path, toy, monkeypatch, capsys):
    assert toy(tmp_path / "ref") == 0
    want = _weights(tmp_path / "ref")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cases = (("train.time_limit", ["train.time_limit=0:00:01"]),
             ("SLURM_JOB_END_TIME", []))
    for name, extra in cases:
        if name == "SLURM_JOB_END_TIME":
            monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 30))  # under the margin
        out = tmp_path / name
        capsys.readouterr()
        rc = toy(out, *extra)
        err = capsys.readouterr().err
        stopped = rc == EXIT_PREEMPTED and "time limit near" in err and "Traceback" not in err
        assert stopped and load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 1, (rc, err[-1500:])
        monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
        assert toy(out, "--resume", "auto") == 0
        got = _weights(out)
        same = all(torch.equal(got[k], want[k]) for k in want)
        faults_tally.fault(f"time limit ({name}): saved, exit 75, resumed", same)
        assert same


def test_durations_and_slurm_time_left(tmp_path, monkeypatch):
    from launch.preempt import StopRequest, parse_duration, slurm_seconds_left

    assert parse_duration("3:55:00") == 14100 and parse_duration("1-00:00:30") == 86430
    assert parse_duration("55:00") == 3300 and parse_duration(90) == 90 and parse_duration("14100") == 14100
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert slurm_seconds_left({"SLURM_JOB_END_TIME": "1000"}, now=400.0) == 600
    assert slurm_seconds_left({}) is None
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "squeue").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\necho 1-02:03:04\n")
    (stub / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:{os.environ['PATH']}")
    assert slurm_seconds_left({"SLURM_JOB_ID": "77"}) == 93784
    assert (tmp_path / "calls").read_text().split() == ["-h", "-j", "77", "-o", "%L"]
    stop = StopRequest(time_limit=100, env={})
    stop.slowest.update(save=3.0, step=1.0, eval=5.0)
    assert stop.margin() == 12.0 and stop.requested() is None
    stop.deadline = time.monotonic() + 11.0
    assert stop.requested() == "time limit near (margin 12 s)"
    assert stop.requested(timed=False) is None  # before the first step: signals only
