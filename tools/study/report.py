"""The study's report from the runs' own files: per-arm means, paired differences, intervals, gates.

Per run (metrics/epochs.jsonl, summary.json, config.yaml): final and best validation top-1, final top-5
and loss, wall time and training images/s of the last epoch (summary.json), the validation curve and the
fitted DA-SSDP gate k per site (`dassdp/<site>/gate_k`). Arms are compared with the first arm (the
reference) on the seeds where every arm finished: per-seed difference, mean, 95% t and bootstrap
intervals, paired t-test p-value.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from tools.study.study import Run, Study

ARM_METRICS = ("final_top1", "best_top1", "final_top5", "final_loss", "wall_s", "img_per_s")
PAIRED_METRICS = ("final_top1", "best_top1")
BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED = 10_000, 0  # fixed: the same runs give the same report
GATE_KEY = re.compile(r"^dassdp/(.+)/gate_k$")


def read_jsonl(path: Path) -> list[dict]:
    """Records of a metrics .jsonl file (a line cut by a crash is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines() if Path(path).is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def run_metrics(run_dir: Path) -> dict:
    """One finished run's numbers, read from its own files."""
    evals = [r for r in read_jsonl(run_dir / "metrics" / "epochs.jsonl") if "val_top1" in r]
    summary = json.loads((run_dir / "summary.json").read_text())
    last = evals[-1]
    return {"final_top1": last["val_top1"], "best_top1": max(r["val_top1"] for r in evals),
            "final_top5": last["val_top5"], "final_loss": last["val_loss"], "wall_s": summary["wall_s"],
            "img_per_s": summary["img_per_s"], "curve": [[r["epoch"], r["val_top1"]] for r in evals],
            "gate_k": gate_k(run_dir)}


def gate_k(run_dir: Path) -> dict | None:
    """{site: fitted k} of a DA-SSDP run ({} while still in warm-up); None when DA-SSDP is off."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    if not cfg.get("dassdp", {}).get("enabled"):
        return None
    for name in ("epochs", "steps"):
        for row in reversed(read_jsonl(run_dir / "metrics" / f"{name}.jsonl")):
            gates = {m.group(1): v for k, v in row.items() if (m := GATE_KEY.match(k))}
            if gates:
                return gates
    return {}


def paired(ref: list[float], other: list[float]) -> dict:
    """Mean of other - ref with 95% t and bootstrap intervals and the paired t-test p-value."""
    a, b = np.asarray(ref, float), np.asarray(other, float)
    d = b - a
    n, mean = len(d), float(d.mean())
    out = {"n": n, "per_seed": d.tolist(), "mean": mean, "t_ci": None, "bootstrap_ci": None, "p_value": None}
    if n < 2:
        return out
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = d[rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))].mean(axis=1)
    with warnings.catch_warnings():  # identical differences: the t statistic is undefined (p = None)
        warnings.simplefilter("ignore")
        p = float(stats.ttest_rel(b, a).pvalue)
    out.update(t_ci=[mean - half, mean + half],
               bootstrap_ci=[float(x) for x in np.percentile(means, [2.5, 97.5])],
               p_value=None if math.isnan(p) else p)
    return out


def build_report(study: Study) -> dict:
    """The report as a JSON-ready dict."""
    runs = study.runs()
    rows = {r.name: _run_row(r) for r in runs}
    arms = [a.name for a in study.arms]
    by_arm = {a: {r.k: rows[r.name] for r in runs if r.arm == a and rows[r.name]["state"] == "done"}
              for a in arms}
    per_arm = {}
    for a in arms:
        done = list(by_arm[a].values())
        per_arm[a] = {"n": len(done), **{m: _mean_std([x[m] for x in done]) for m in ARM_METRICS}}
    seeds = [k for k in range(study.seeds) if all(k in by_arm[a] for a in arms)]
    ref = arms[0]
    comparisons = []
    for a in arms[1:]:
        comparisons.append({"arm": a, "reference": ref, "seeds": seeds, "metrics": {
            m: paired([by_arm[ref][k][m] for k in seeds], [by_arm[a][k][m] for k in seeds])
            for m in PAIRED_METRICS}})
    note = None
    if len(seeds) < 2:
        note = (f"{len(seeds)} seed(s) finished in every arm: an interval needs 2 or more "
                f"(run `dassdp-study run` again with --seeds 2 or more)")
    missing = [{"run": n, "state": r["state"], "log": r["log"]}
               for n, r in rows.items() if r["state"] != "done"]
    return {"study": study.record(), "reference": ref, "paired_seeds": seeds, "arms": per_arm,
            "comparisons": comparisons, "interval_note": note, "not_finished": missing, "runs": rows}


def _run_row(run: Run) -> dict:
    state = run.state()
    row = {"arm": run.arm, "k": run.k, "seed": run.seed, "state": state, "dir": str(run.dir),
           "log": str(run.log)}
    if state == "done":
        row.update(run_metrics(run.dir))
    return row


def _mean_std(xs: list[float]) -> dict:
    if not xs:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None}


def write_report(study: Study, report: dict) -> list[Path]:
    """report.json, report.md and the PNGs in the study folder; returns their paths."""
    from tools.study.markdown import to_markdown
    from tools.study.plots import plot_curves, plot_paired

    out = study.out
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(report))
    paths = [out / "report.json", out / "report.md"]
    for fn, name in ((plot_paired, "paired.png"), (plot_curves, "curves.png")):
        if fn(report, out / name):
            paths.append(out / name)
    return paths
