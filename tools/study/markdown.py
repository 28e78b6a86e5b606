"""report.md: paste-ready tables (accuracies in %, differences in percentage points)."""
from __future__ import annotations

NAMES = {"final_top1": "final top-1 (%)", "best_top1": "best top-1 (%)", "final_top5": "final top-5 (%)",
         "final_loss": "final val loss", "wall_s": "wall (s)", "img_per_s": "train img/s"}
PERCENT = {"final_top1", "best_top1", "final_top5"}


def _num(x, metric: str = "", digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.{digits}f}" if metric in PERCENT else f"{x:.{3 if abs(x) < 10 else 0}f}"


def _mean_std(cell: dict, metric: str) -> str:
    if cell["mean"] is None:
        return "-"
    s = _num(cell["mean"], metric)
    return s if cell["std"] is None else f"{s} ± {_num(cell['std'], metric)}"


def _interval(ci) -> str:
    return "-" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def to_markdown(rep: dict) -> str:
    """The whole report as Markdown."""
    lines = [f"# Study: {rep['study']['config']}", "",
             f"Arms vs `{rep['reference']}` on paired seeds {rep['paired_seeds']} "
             f"(train.seed = {rep['study']['base_seed']} + k). Mean ± std over finished seeds.", ""]
    lines += ["| arm | seeds | " + " | ".join(NAMES.values()) + " |", "|---" * (len(NAMES) + 2) + "|"]
    for arm, cells in rep["arms"].items():
        lines.append(f"| {arm} | {cells['n']} | " + " | ".join(_mean_std(cells[m], m) for m in NAMES) + " |")
    for comp in rep["comparisons"]:
        lines += _comparison(rep, comp)
    if rep["interval_note"]:
        lines += ["", f"Interval: {rep['interval_note']}."]
    lines += _gates(rep)
    if rep["not_finished"]:
        lines += ["", "## Not finished (left out of every number above)", ""]
        lines += [f"- {x['run']}: {x['state']}, log {x['log']}" for x in rep["not_finished"]]
    return "\n".join(lines) + "\n"


def _comparison(rep: dict, comp: dict) -> list[str]:
    a, ref = comp["arm"], comp["reference"]
    runs = rep["runs"]
    lines = ["", f"## {a} − {ref} (percentage points, per seed)", "",
             "| seed k | train.seed | metric | " + f"{ref} | {a} | difference |", "|---|---|---|---|---|---|"]
    for i, k in enumerate(comp["seeds"]):
        ra, rr = runs[f"{a}/seed-{k}"], runs[f"{ref}/seed-{k}"]
        for m, stat in comp["metrics"].items():
            lines.append(f"| {k} | {ra['seed']} | {m} | {_num(rr[m], m)} | {_num(ra[m], m)} | "
                         f"{100 * stat['per_seed'][i]:+.2f} |")
    lines += ["", "| metric | n | mean difference | 95% CI (t) | 95% CI (bootstrap) | p (paired t-test) |",
              "|---|---|---|---|---|---|"]
    for m, s in comp["metrics"].items():
        mean = "-" if not s["n"] else f"{100 * s['mean']:+.2f}"
        p = "-" if s["p_value"] is None else f"{s['p_value']:.3g}"
        lines.append(f"| {m} | {s['n']} | {mean} | {_interval(s['t_ci'])} | {_interval(s['bootstrap_ci'])} "
                     f"| {p} |")
    return lines


def _gates(rep: dict) -> list[str]:
    gated = {n: r["gate_k"] for n, r in rep["runs"].items() if r.get("gate_k") is not None}
    if not gated:
        return []
    sites = sorted({s for g in gated.values() for s in g})
    lines = ["", "## DA-SSDP gate k per site (fitted at the end of warm-up)", "",
             "| run | " + " | ".join(sites) + " |", "|---" * (len(sites) + 1) + "|"]
    for name, g in gated.items():
        cells = [f"{g[s]:+.4f}" if s in g else "not fitted" for s in sites]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
