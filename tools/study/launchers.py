"""Launchers: run a study's unfinished runs locally (sequential or N processes) or as a SLURM job array.

Every attempt appends to the run's train.log and ends by writing exit.json; the trainer itself resumes an
interrupted run from its last checkpoint (`--resume auto` is always passed).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.study.study import Run, StudyError


def train_command(run: Run, gpus: int = 0) -> list[str]:
    """The trainer's public CLI for one run; several GPUs go through `accelerate launch`."""
    if gpus > 1:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        return [accelerate, "launch", "--multi_gpu", "--num_processes", str(gpus), "-m", "launch.train",
                *run.args]
    return [sys.executable, "-m", "launch.train", *run.args]


def _start_log(run: Run, cmd: list[str]) -> None:
    run.dir.mkdir(parents=True, exist_ok=True)
    with open(run.log, "a") as f:
        f.write(f"== dassdp-study attempt {time.strftime('%Y-%m-%dT%H:%M:%S')}: {shlex.join(cmd)}\n")


def _end(run: Run, cmd: list[str], rc: int, seconds: float) -> int:
    (run.dir / "exit.json").write_text(json.dumps({"rc": rc, "seconds": seconds, "command": cmd}) + "\n")
    return rc


def execute(run: Run, cmd: list[str], cwd: str, env: dict | None = None) -> int:
    """Run one attempt to its end (the SLURM job body); returns the trainer's exit status."""
    _start_log(run, cmd)
    t0 = time.time()
    with open(run.log, "a") as log:
        rc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}).returncode
    return _end(run, cmd, rc, time.time() - t0)


def core_slots(parallel: int) -> list[list[int]]:
    """Disjoint core sets, one per process: cores // parallel each (the rest stay idle)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    if not 1 <= parallel <= len(cores):
        raise StudyError(f"--parallel {parallel}: this machine gives the study {len(cores)} core(s); pass "
                         f"--parallel 1 to {len(cores)}")
    per = len(cores) // parallel
    return [cores[i * per:(i + 1) * per] for i in range(parallel)]


def run_local(runs: list[Run], parallel: int = 1, cwd: str | None = None, say=print) -> dict[str, int]:
    """Run `runs` with at most `parallel` processes, each pinned to its own cores; {run name: exit status}."""
    slots, cwd = core_slots(parallel), cwd or os.getcwd()
    free, active, results, queue = list(range(parallel)), {}, {}, list(runs)
    while queue or active:
        while queue and free:
            run, slot = queue.pop(0), free.pop(0)
            proc, log = _spawn(run, slots[slot] if parallel > 1 else None, cwd)
            active[proc] = (run, slot, log, time.time())
        time.sleep(0.2)
        for proc in [p for p in active if p.poll() is not None]:
            run, slot, log, t0 = active.pop(proc)
            log.close()
            results[run.name] = _end(run, proc.args, proc.returncode, time.time() - t0)
            free.append(slot)
            what = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}), log {run.log}"
            say(f"dassdp-study: [{len(results)}/{len(runs)}] {run.name}: {what} ({time.time() - t0:.0f} s)")
    return results


def _spawn(run: Run, cores: list[int] | None, cwd: str):
    """Start one attempt; returns (process, its open log file)."""
    cmd = train_command(run)
    _start_log(run, cmd)
    env = dict(os.environ)
    pin = None
    if cores is not None:  # split the machine: threads per process = its cores, never oversubscribed
        env.update(OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
        pin = (lambda: os.sched_setaffinity(0, cores)) if hasattr(os, "sched_setaffinity") else None
    log = open(run.log, "a")  # noqa: SIM115 (closed when the process ends)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin), log


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 1
    time_min: int = 24 * 60
    cpus_per_run: int | None = None
    cluster: str | None = None  # None: SLURM when available; "local"/"debug": submitit's test executors
    wait: bool = True


def run_slurm(runs: list[Run], folder: Path, opts: SlurmOptions, say=print) -> dict[str, int]:
    """Submit the runs as one submitit job array; waits for them unless opts.wait is False."""
    import submitit

    runs = [r for r in runs if not _queued(r)]
    if not runs:
        say("dassdp-study: every unfinished run is still queued or running on SLURM")
        return {}
    ex = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster=opts.cluster)
    params = {"timeout_min": opts.time_min, "tasks_per_node": 1, "nodes": 1, "name": "dassdp-study",
              "slurm_array_parallelism": len(runs)}
    if opts.gpus_per_run:
        params["gpus_per_node"] = opts.gpus_per_run
    if opts.cpus_per_run:
        params["cpus_per_task"] = opts.cpus_per_run
    if opts.partition:
        params["slurm_partition"] = opts.partition
    ex.update_parameters(**params)
    cmds = [train_command(r, opts.gpus_per_run) for r in runs]
    jobs = ex.map_array(execute, runs, cmds, [os.getcwd()] * len(runs))
    for run, job in zip(runs, jobs):
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.dir / "slurm_job.txt").write_text(f"{job.job_id}\n")
        say(f"dassdp-study: {run.name}: submitted as job {job.job_id}")
    if not opts.wait:
        return {}
    results = {}
    for run, job in zip(runs, jobs):
        try:
            results[run.name] = job.result()
        except Exception as err:  # a job killed by SLURM (time limit, node failure): keep the others
            results[run.name] = _end(run, [], -1, 0.0)
            say(f"dassdp-study: {run.name}: job {job.job_id} failed ({type(err).__name__}), log {run.log} "
                f"and {folder}")
        say(f"dassdp-study: {run.name}: {'done' if results[run.name] == 0 else 'FAILED'}")
    return results


def _queued(run: Run) -> bool:
    """True while the run's last SLURM job is pending or running (so a re-run does not submit it twice)."""
    marker = run.dir / "slurm_job.txt"
    if not marker.is_file():
        return False
    try:
        state = subprocess.run(["squeue", "-h", "-o", "%T", "-j", marker.read_text().strip()],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False  # no SLURM here (submitit's local/debug executors): nothing can be queued
    return state.startswith(("PENDING", "RUNNING", "CONFIGURING", "REQUEUED"))
