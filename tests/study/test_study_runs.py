"""dassdp-study end to end on the tiny model: report vs the runs' files, pairing, kill and re-run, SLURM."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats
from study_helpers import ROOT, study, study_cmd, study_env, tiny

SEEDS, BASE = 2, 12450  # configs/smoke.yaml's train.seed
ARMS = ["--arm", "baseline", "dassdp.enabled=false",
        "--arm", "warm", "dassdp.enabled=true", "dassdp.warmup_steps=1000",  # rule never applied
        "--arm", "dassdp", "dassdp.enabled=true", "dassdp.warmup_steps=2"]  # gate fitted, rule acting


def run_args(out, data) -> list:
    return ["run", "--config", "configs/smoke.yaml", "--seeds", SEEDS, "--out", out, *tiny(data), *ARMS]


@pytest.fixture(scope="module")
def done(tmp_path_factory, fmnist_small):
    """One finished 3-arm x 2-seed study (reused read-only; tests copy it to change it)."""
    out = tmp_path_factory.mktemp("study") / "s"
    proc = study(*run_args(out, fmnist_small))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def weights(run_dir):
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def copy_study(done, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(done[0], out)
    return out


def test_report_matches_the_runs_files(done):
    out, proc = done
    rep = json.loads((out / "report.json").read_text())
    for arm in ("baseline", "warm", "dassdp"):
        finals, bests = [], []
        for k in range(SEEDS):
            d = out / arm / f"seed-{k}"
            evals = jsonl(d / "metrics/epochs.jsonl")
            summary = json.loads((d / "summary.json").read_text())
            row = rep["runs"][f"{arm}/seed-{k}"]
            assert row["state"] == "done" and row["seed"] == BASE + k
            assert row["final_top1"] == evals[-1]["val_top1"] and row["final_top5"] == evals[-1]["val_top5"]
            assert row["best_top1"] == max(e["val_top1"] for e in evals) == summary["best_acc1"]
            assert (row["wall_s"], row["img_per_s"]) == (summary["wall_s"], summary["img_per_s"])
            assert [v for _, v in row["curve"]] == [e["val_top1"] for e in evals]
            finals.append(row["final_top1"])
            bests.append(row["best_top1"])
        cell = rep["arms"][arm]
        assert cell["n"] == SEEDS and cell["final_top1"]["mean"] == pytest.approx(np.mean(finals))
        assert cell["best_top1"]["std"] == pytest.approx(np.std(bests, ddof=1))
    comp = {c["arm"]: c for c in rep["comparisons"]}["dassdp"]
    assert comp["reference"] == "baseline" and comp["seeds"] == [0, 1]
    d = [rep["runs"][f"dassdp/seed-{k}"]["final_top1"] - rep["runs"][f"baseline/seed-{k}"]["final_top1"]
         for k in range(SEEDS)]
    st = comp["metrics"]["final_top1"]
    assert st["per_seed"] == pytest.approx(d) and st["mean"] == pytest.approx(np.mean(d))
    if np.std(d) > 0:  # else the interval is a point and the t statistic undefined
        assert st["t_ci"] == pytest.approx(stats.t.interval(0.95, 1, loc=np.mean(d), scale=stats.sem(d)))
    for k in range(SEEDS):  # the gate: the DA-SSDP run's own last record; warm-up never ended in `warm`
        last = jsonl(out / f"dassdp/seed-{k}/metrics/epochs.jsonl")[-1]
        gates = rep["runs"][f"dassdp/seed-{k}"]["gate_k"]
        assert gates and all(last[f"dassdp/{site}/gate_k"] == v for site, v in gates.items())
        assert rep["runs"][f"warm/seed-{k}"]["gate_k"] == {}
        assert rep["runs"][f"baseline/seed-{k}"]["gate_k"] is None
    md = (out / "report.md").read_text()
    assert md in proc.stdout + "\n" and "| baseline | 2 |" in md and "95% CI (bootstrap)" in md
    for png in ("paired.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pairing_same_seed_same_weights_until_the_rule_acts(done):
    """Rule still in warm-up: bit-identical to the baseline; it is the seed that sets weights and data."""
    out = done[0]
    for k in range(SEEDS):
        base, warm = weights(out / f"baseline/seed-{k}"), weights(out / f"warm/seed-{k}")
        assert same(base, warm), k
        hook = torch.load(out / f"warm/seed-{k}/checkpoints/last.pt", weights_only=True)["hooks"]["dassdp"]
        assert not hook["fitted"] and hook["applied_steps"] == 0
        assert not same(base, weights(out / f"dassdp/seed-{k}"))  # once applied, the rule changes weights
    assert not same(weights(out / "baseline/seed-0"), weights(out / "baseline/seed-1"))


def test_kill_mid_study_then_run_again_keeps_finished_runs(done, fmnist_small, tmp_path):
    out = copy_study(done, tmp_path)
    for name in ("warm/seed-1", "dassdp/seed-1"):  # the last two runs of the study, to be run again
        shutil.rmtree(out / name)
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/summary.json")}
    proc = subprocess.Popen(study_cmd(*run_args(out, fmnist_small)), cwd=ROOT, env=study_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "dassdp/seed-1/train.log").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its training process, mid-run
    proc.wait()
    assert (out / "warm/seed-1/summary.json").is_file() and not (out / "dassdp/seed-1/summary.json").exists()
    kept[out / "warm/seed-1/summary.json"] = (out / "warm/seed-1/summary.json").stat().st_mtime_ns
    again = study(*run_args(out, fmnist_small))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 run(s) to do, 5 finished run(s) kept" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs untouched
    assert (out / "dassdp/seed-1/train.log").read_text().count("== dassdp-study attempt") == 2
    assert same(weights(out / "dassdp/seed-1"), weights(done[0] / "dassdp/seed-1"))


def test_slurm_launcher_with_submitits_debug_executor_submits_only_unfinished(done, fmnist_small, tmp_path):
    out = copy_study(done, tmp_path)
    shutil.rmtree(out / "baseline/seed-1")
    proc = study(*run_args(out, fmnist_small), "--launcher", "slurm", "--slurm-cluster", "debug",
                 "--gpus-per-run", "0", "--time", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("submitted as job") == 1 and "baseline/seed-1: submitted" in proc.stderr
    assert [p.parent.relative_to(out).as_posix() for p in out.glob("*/seed-*/slurm_job.txt")] == \
        ["baseline/seed-1"]
    assert same(weights(out / "baseline/seed-1"), weights(done[0] / "baseline/seed-1"))
    assert json.loads((out / "report.json").read_text())["paired_seeds"] == [0, 1]


def test_a_failed_run_is_reported_with_its_log_never_averaged(done, tmp_path):
    out = copy_study(done, tmp_path)
    failed = out / "dassdp/seed-1"
    (failed / "summary.json").unlink()
    (failed / "exit.json").write_text(json.dumps({"rc": 1, "seconds": 1.0, "command": []}))
    proc = study("report", out)
    assert proc.returncode == 1
    rep = json.loads((out / "report.json").read_text())
    log = str(failed / "train.log")
    assert rep["not_finished"] == [{"run": "dassdp/seed-1", "state": "failed", "log": log}]
    assert rep["arms"]["dassdp"]["n"] == 1 and rep["paired_seeds"] == [0]
    assert "2 or more" in rep["interval_note"] and log in proc.stderr


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("change, message", [
    (["--config", "configs/demo.yaml"], "records another study"),
    (["--arm", "extra", "optim.lr=1e-3"], "records another study"),
    (["--seeds", "1"], "--no-interval"),
    (["--parallel", "64"], "--parallel 64"),
])
def test_refusals_leave_the_study_untouched(done, fmnist_small, change, message):
    out = done[0]
    before = snapshot(out)
    args = run_args(out, fmnist_small)
    if change[0] in ("--config", "--seeds"):
        i = args.index(change[0])
        args[i + 1] = change[1]
    else:
        args += change
    proc = study(*args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before
