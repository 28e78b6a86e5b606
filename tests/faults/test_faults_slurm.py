"""launch/accelerate/slurm_multinode.sh with stub `srun`, `scontrol`, `squeue` and launcher on PATH.

The stubs record their calls; srun runs its command line (as one task on node 0), the stub launcher
stands in for torchrun: it forwards USR1 to the real trainer (stand-in parts) and reports any failure
as 1. USR1 to the batch script must end in `scontrol requeue <job>`; the requeued job resumes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults_tally
from launch_toy import TOY_ARGS

from launch.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "launch" / "accelerate" / "slurm_multinode.sh"
ENTRY = ROOT / "tests" / "launch" / "launch_toy_entry.py"

SRUN = """#!/bin/bash
echo "srun $*" >> "$CALLS"
while [[ "$1" == --* ]]; do shift; done
export SLURM_NODEID=0
exec "$@"
"""
SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$CALLS"
if [[ "$1 $2" == "show hostnames" ]]; then echo node0; fi
"""
SQUEUE = """#!/bin/bash
echo "squeue $*" >> "$CALLS"
echo 1:00:00
"""
# torchrun's part: USR1 forwarded to the worker (PET_SIGNALS_TO_HANDLE), a failed worker reported as 1
LAUNCHER = """#!/bin/bash
echo "accelerate $*" >> "$CALLS"
args=("$@")
for i in "${!args[@]}"; do
  if [[ "${args[$i]}" == "-m" ]]; then rest=("${args[@]:$((i + 2))}"); break; fi
done
"$PYTHON" "$ENTRY" "${rest[@]}" &
child=$!
trap 'echo "launcher: USR1 -> worker (PET_SIGNALS_TO_HANDLE=$PET_SIGNALS_TO_HANDLE)" >> "$CALLS"
      kill -USR1 $child' USR1
while true; do
  wait $child && rc=0 || rc=$?
  kill -0 $child 2>/dev/null || break
done
[[ $rc == 0 ]] || exit 1
"""


def _stubs(tmp: Path) -> dict:
    bin_ = tmp / "bin"
    bin_.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL), ("squeue", SQUEUE), ("accelerate", LAUNCHER)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "CALLS": str(tmp / "calls"),
            "PYTHON": sys.executable, "ENTRY": str(ENTRY), "ACCELERATE": str(bin_ / "accelerate"),
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node0", "SLURM_NNODES": "1", "GPUS_PER_NODE": "1",
            "SLURM_JOB_END_TIME": str(int(time.time()) + 36000), "DASSDP_EXIT_FILE": str(tmp / "exit"),
            "OMP_NUM_THREADS": "1", "CONFIG": str(tmp / "job.yaml")}


def _job(env: dict, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(SCRIPT), *TOY_ARGS, "log.progress=false", "train.save_every_steps=1",
                             *args], env=env, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def test_usr1_saves_requeues_and_the_requeued_job_resumes(tmp_path):
    env, out = _stubs(tmp_path), tmp_path / "run"
    (tmp_path / "job.yaml").write_text(f"train:\n  epochs: 100\n  output_dir: {out}\n")
    log = tmp_path / "job.log"
    job = _job(env, log)
    deadline = time.monotonic() + 180
    while not (out / "checkpoints" / "last.pt").exists():  # training is under way: its first step saved
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    job.send_signal(signal.SIGUSR1)
    rc = job.wait(timeout=180)
    calls = (tmp_path / "calls").read_text()
    text = log.read_text()
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    ok = rc == 75 and "scontrol requeue 4242" in calls and "SIGUSR1 received: stopped at step" in text
    ok &= "launcher: USR1 -> worker (PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1)" in calls
    ok &= "-m launch.train --config" in calls and "--resume auto" in calls and "squeue" not in calls
    assert ok, f"rc {rc}\n{calls}\n{text[-3000:]}"
    # the requeued job: same script and folder; it resumes, then ends (stop_after_steps): no requeue
    (tmp_path / "calls").write_text("")
    job = _job(env, log, f"train.stop_after_steps={step + 1}")
    rc = job.wait(timeout=180)
    calls, text = (tmp_path / "calls").read_text(), log.read_text()
    ok = rc == 0 and "scontrol requeue" not in calls
    ok &= f"resumed from {out / 'checkpoints' / 'last.pt'}" in text
    ok &= load_checkpoint(out / "checkpoints" / "last.pt")["step"] == step + 1
    faults_tally.fault("SLURM USR1: saved, requeued, resumed", ok)
    assert ok, f"rc {rc}\n{calls}\n{text[-3000:]}"
