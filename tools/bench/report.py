"""Write the JSON document, draw PNG charts next to it, print a table."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

SCHEMA_VERSION = 1
REQUIRED_RESULT_KEYS = ("mode", "case", "metric", "unit", "min", "median", "max")
REQUIRED_RATIO_KEYS = ("a", "b", "metric", "median")


def validate(doc: dict) -> None:
    """Raise ValueError when `doc` does not have the documented shape."""
    for key in ("schema", "environment", "settings", "results", "ratios"):
        if key not in doc:
            raise ValueError(f"benchmark JSON lacks the top-level key {key!r}")
    for i, rec in enumerate(doc["results"]):
        missing = [k for k in REQUIRED_RESULT_KEYS if k not in rec]
        if missing:
            raise ValueError(f"results[{i}] lacks {missing}")
    for i, rec in enumerate(doc["ratios"]):
        missing = [k for k in REQUIRED_RATIO_KEYS if k not in rec]
        if missing:
            raise ValueError(f"ratios[{i}] lacks {missing}")
    if "vector_isa" not in doc["environment"].get("hardware", {}):
        raise ValueError("benchmark JSON lacks environment.hardware.vector_isa (the CPU's vector ISA)")


def write_json(doc: dict, path: str | Path) -> Path:
    """Validate and write atomically (temporary name, then rename)."""
    validate(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _label(rec: dict) -> str:
    return rec["case"] if not rec.get("label") else f"{rec['case']} {rec['label']}"


def draw_charts(doc: dict, json_path: str | Path) -> list[Path]:
    """One PNG per (mode, metric) with median bars and min-max whiskers, plus one for the ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(json_path)
    stem = json_path.with_suffix("")
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for rec in doc["results"]:
        groups[(rec["mode"], rec["metric"], rec["unit"])].append(rec)
    out = []
    for (mode, metric, unit), recs in groups.items():
        out.append(_bar_chart(plt, recs, f"{mode}: {metric}", unit, Path(f"{stem}_{mode}_{metric}.png")))
    if doc["ratios"]:
        recs = [{**r, "case": f"{r['a']} / {r['b']}", "unit": "x"} for r in doc["ratios"]]
        for r in recs:
            r.setdefault("min", r["median"])
            r.setdefault("max", r["median"])
        out.append(_bar_chart(plt, recs, "ratios (interleaved rounds)", "ratio", Path(f"{stem}_ratios.png"),
                              ref=1.0))
    return out


def _bar_chart(plt, recs: list[dict], title: str, unit: str, path: Path, ref: float | None = None) -> Path:
    labels = [_label(r) for r in recs]
    med = [r["median"] for r in recs]
    lo = [r["median"] - r["min"] for r in recs]
    hi = [r["max"] - r["median"] for r in recs]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(recs) + 1.4))
    ax.barh(range(len(recs)), med, xerr=[lo, hi], color="#4C72B0", capsize=3)
    ax.set_yticks(range(len(recs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title + "  (median, min-max)", fontsize=10)
    if ref is not None:
        ax.axvline(ref, color="grey", lw=1, ls="--")
    for i, m in enumerate(med):
        ax.text(m, i, f" {m:.3g}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def header(doc: dict) -> str:
    """What the figures were measured on, in one line: CPU and its vector ISA, cores, torch, threads, git."""
    e = doc["environment"]
    hw = e["hardware"]
    gpus = ", ".join(g["name"] for g in hw.get("gpus", [])) or "no GPU"
    return (f"{hw['cpu']} ({hw['vector_isa']}), {hw['usable_cores']} cores, {gpus}, torch "
            f"{e['versions']['torch']}, torch threads {e['threads']['torch_intra_op']}, "
            f"git {str(e['git']['commit'])[:8]}{'-dirty' if e['git']['dirty'] else ''}")


def format_table(doc: dict) -> str:
    """Plain-text table of results and ratios, under the header line."""
    lines = [f"# {header(doc)}",
             f"{'mode':8} {'case':34} {'metric':22} {'median':>11} {'min':>11} {'max':>11}  unit"]
    for r in doc["results"]:
        lines.append(f"{r['mode']:8} {_label(r)[:34]:34} {r['metric'][:22]:22} {r['median']:11.4g} "
                     f"{r['min']:11.4g} {r['max']:11.4g}  {r['unit']}")
    for r in doc["ratios"]:
        pair = f"{r['a']} / {r['b']}"
        lines.append(f"ratio    {pair[:34]:34} {r['metric'][:22]:22} {r['median']:11.4g} "
                     f"{r.get('min', float('nan')):11.4g} {r.get('max', float('nan')):11.4g}  x")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    """Results and ratios of one document as Markdown tables (for docs/benchmarks.md)."""
    e = doc["environment"]
    head = (f"`{' '.join(doc['command'])}` — {header(doc)}, load average {e['load_average_start'][0]} -> "
            f"{e['load_average_end'][0]}")
    lines = [head, "", "| case | metric | median | min | max | unit |", "|---|---|---:|---:|---:|---|"]
    for r in doc["results"]:
        lines.append(f"| {_label(r)} | {r['metric']} | {r['median']:.4g} | {r['min']:.4g} | {r['max']:.4g} "
                     f"| {r['unit']} |")
    if doc["ratios"]:
        lines += ["", "| ratio | metric | median | min | max |", "|---|---|---:|---:|---:|"]
        for r in doc["ratios"]:
            lines.append(f"| {r['a']} / {r['b']} {r.get('label', '')} | {r['metric']} | {r['median']:.3g} | "
                         f"{r.get('min', float('nan')):.3g} | {r.get('max', float('nan')):.3g} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tools.bench.report FILE.json ...: Markdown tables
    import sys

    for name in sys.argv[1:]:
        print(markdown(json.loads(Path(name).read_text())) + "\n")
