"""The report's figures (matplotlib Agg): paired dot plot and validation curves per arm."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_paired(rep: dict, path: Path) -> bool:
    """Final top-1 per arm, one line per paired seed from arm to arm; False when nothing is paired."""
    seeds, arms = rep["paired_seeds"], list(rep["arms"])
    if not seeds:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(arms), 3.6))
    for k in seeds:
        ys = [100 * rep["runs"][f"{a}/seed-{k}"]["final_top1"] for a in arms]
        ax.plot(range(len(arms)), ys, "o-", color="0.5", alpha=0.7, markersize=4)
        ax.annotate(f"k={k}", (len(arms) - 1, ys[-1]), xytext=(4, 0), textcoords="offset points", fontsize=7)
    means = [100 * rep["arms"][a]["final_top1"]["mean"] for a in arms]
    ax.plot(range(len(arms)), means, "s-", color="C3", label="mean", linewidth=2)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_xlim(-0.4, len(arms) - 0.4)
    ax.set_ylabel("final validation top-1 (%)")
    ax.set_title(f"paired seeds (n={len(seeds)})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curves(rep: dict, path: Path) -> bool:
    """Validation top-1 per epoch: mean of each arm's finished seeds with a min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = False
    for i, arm in enumerate(rep["arms"]):
        curves = [r["curve"] for r in rep["runs"].values() if r["arm"] == arm and r["state"] == "done"]
        if not curves:
            continue
        n = min(len(c) for c in curves)  # the same recipe: the same evaluated epochs
        x = [e for e, _ in curves[0][:n]]
        y = 100 * np.array([[v for _, v in c[:n]] for c in curves])  # [seeds, epochs]
        ax.plot(x, y.mean(0), color=f"C{i}", label=f"{arm} (n={len(curves)})")
        ax.fill_between(x, y.min(0), y.max(0), color=f"C{i}", alpha=0.2, linewidth=0)
        drawn = True
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title("mean over seeds, band = min-max", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn
