"""Turn a run folder into PNG curves and a short text summary.

    python -m tools.plot_run RUN_DIR [--out RUN_DIR/plots]

Reads RUN_DIR/metrics/{steps,epochs}.jsonl (written by dassdp-train) and writes loss.png, accuracy.png,
lr.png, throughput.png, dassdp.png (when the run had DA-SSDP) and summary.txt.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a line cut by a crash is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def series(rows: list[dict], key: str, x: str = "step") -> tuple[list, list]:
    """(x, y) of the rows that have a finite `key`."""
    pts = [(r[x], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot(path: Path, title: str, lines: list[tuple[str, list, list]], ylabel: str, logy: bool = False):
    lines = [ln for ln in lines if ln[1]]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, xs, ys in lines:
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run: Path, out: Path | None = None) -> tuple[list[Path], str]:
    """Write the PNG curves and summary.txt; returns (written files, summary text)."""
    steps = read_jsonl(run / "metrics" / "steps.jsonl")
    epochs = read_jsonl(run / "metrics" / "epochs.jsonl")
    if not steps and not epochs:
        raise FileNotFoundError(f"{run}/metrics has no steps.jsonl or epochs.jsonl: is {run} a dassdp-train "
                                "run folder?")
    out = out or run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    made = [
        _plot(out / "loss.png", "loss", [("train (step)", *series(steps, "loss")),
                                         ("train (epoch)", *series(epochs, "train_loss")),
                                         ("val", *series(epochs, "val_loss"))], "cross-entropy"),
        _plot(out / "accuracy.png", "accuracy", [("train top-1", *series(epochs, "train_top1")),
                                                 ("val top-1", *series(epochs, "val_top1")),
                                                 ("val top-5", *series(epochs, "val_top5"))], "fraction"),
        _plot(out / "lr.png", "learning rate", [("lr", *series(steps, "lr"))], "lr", logy=True),
        _plot(out / "throughput.png", "throughput", [("images/s", *series(steps, "img_per_s"))], "images/s"),
    ]
    keys = sorted({k for r in steps + epochs for k in r if k.startswith("dassdp/")})
    src = {k: (steps if any(k in r for r in steps) else epochs) for k in keys}
    if keys:
        made.append(_plot(out / "dassdp.png", "DA-SSDP site statistics",
                          [(k[len("dassdp/"):], *series(src[k], k)) for k in keys], "value"))
    text = summary(run, steps, epochs, keys)
    (out / "summary.txt").write_text(text + "\n")
    return [p for p in made if p] + [out / "summary.txt"], text


def _last(rows: list[dict], key: str):
    vals = series(rows, key)[1]
    return vals[-1] if vals else None


def summary(run: Path, steps: list[dict], epochs: list[dict], dassdp_keys: list[str]) -> str:
    """A few lines: length, loss first -> last, accuracy, throughput, gate."""
    losses = series(steps, "loss")[1]
    lines = [f"run: {run}"]
    cfg = run / "config.yaml"
    if cfg.is_file():
        import yaml

        c = yaml.safe_load(cfg.read_text())
        lines.append(f"model: {c['model']['name']} T={c['model']['T']}  data: {c['data']['dataset']} "
                     f"({c['data']['backend']})  dassdp: {'on' if c['dassdp']['enabled'] else 'off'}")
    last_step = max((r["step"] for r in steps + epochs), default=0)
    lines.append(f"steps: {last_step}  epochs: {len(epochs)}")
    if losses:
        k = max(1, len(losses) // 10)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        lines.append(f"train loss: {first:.4f} (first {k} records) -> {last:.4f} (last {k})")
    best = max(series(epochs, "val_top1")[1], default=None)
    if best is not None:
        lines.append(f"val top-1: best {best:.4f}, last {_last(epochs, 'val_top1'):.4f}; "
                     f"val top-5 last {_last(epochs, 'val_top5'):.4f}")
    ips, wait = series(steps, "img_per_s")[1], series(steps, "data_wait")[1]
    if ips:
        lines.append(f"throughput: median {sorted(ips)[len(ips) // 2]:.1f} images/s, data wait "
                     f"{100 * sum(wait) / max(len(wait), 1):.1f}% of wall time")
    gate = [k for k in dassdp_keys if k.endswith("gate_k")]
    if gate:
        lines.append("dassdp gate k: " + ", ".join(f"{k.split('/')[1]} {_last(epochs or steps, k):+.4f}"
                                                  for k in gate if _last(epochs or steps, k) is not None))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: RUN_DIR [--out DIR]."""
    p = argparse.ArgumentParser(prog="python -m tools.plot_run", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a dassdp-train output folder")
    p.add_argument("--out", type=Path, help="where to write (default RUN/plots)")
    args = p.parse_args(argv)
    try:
        files, text = plot_run(args.run, args.out)
    except FileNotFoundError as e:
        print(f"plot_run: {e}", file=sys.stderr)
        return 2
    print(text)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
