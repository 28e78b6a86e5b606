"""`make demo`: Fashion-MNIST -> FFCV + DALI, train a small SpikingResformer with DA-SSDP, test, summarise.

    python -m tools.demo [--run-dir runs/demo-<time>] [--data-dir data] [key=value overrides for training]

Steps: convert the Debian package's Fashion-MNIST into both formats (kept and reused next time), train with
`dassdp-train --config configs/demo.yaml` on the FFCV copy (a subprocess: the same program users run),
evaluate the final weights on the DALI copy (`--test-only`, which also prints the SOP/energy table), draw the
curves, print a summary table. The last line is machine-readable:
    demo: test_acc=<fraction> train_s=<seconds> wall_s=<seconds> gate_k=<value> run_dir=<path>
train_s is the training process from start to exit (start-up and per-epoch evaluation included); wall_s the
whole demo (conversion, training, the DALI test, the plots).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"


def log(msg: str) -> None:
    """A demo step, flushed before subprocess output."""
    print(f"[demo] {msg}", flush=True)


def convert_data(data_dir: Path) -> dict[str, Path]:
    """Fashion-MNIST in both formats under data_dir (skipped when already converted)."""
    from launch.datasets import FASHION_MNIST_SRC
    from tools.convert.api import convert

    out = {}
    for fmt in ("ffcv", "dali"):
        path = data_dir / f"fashion-mnist-{fmt}"
        out[fmt] = path
        if (path / "manifest.json").is_file():
            log(f"{fmt}: {path} already converted")
            continue
        if not (FASHION_MNIST_SRC / "train-images-idx3-ubyte.gz").is_file():
            raise SystemExit(f"demo: {FASHION_MNIST_SRC} has no Fashion-MNIST; run `make setup` "
                             "(installs the Debian package dataset-fashion-mnist)")
        t = time.time()
        convert("fashion-mnist", FASHION_MNIST_SRC, path, fmt, progress=sys.stderr.isatty())
        log(f"{fmt}: converted to {path} in {time.time() - t:.1f} s")
    return out


def train(run_dir: Path, ffcv: Path, overrides: list[str]) -> float:
    """Train as a user would, with the demo config; returns the training process's wall time in seconds."""
    cmd = [sys.executable, "-m", "launch.train", "--config", str(CONFIG), "--output-dir", str(run_dir),
           f"data.path={ffcv}", *overrides]
    log("training: " + " ".join(cmd[2:]))
    t = time.time()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"demo: training failed; its log and checkpoints are in {run_dir}")
    return time.time() - t


def test_on_dali(run_dir: Path, dali: Path, overrides: list[str]) -> float:
    """Evaluate the final weights on the DALI copy of the test set; returns top-1."""
    test_dir = run_dir / "test-dali"
    cmd = [sys.executable, "-m", "launch.train", "--config", str(CONFIG), "--output-dir", str(test_dir),
           "--test-only", "--resume", str(run_dir / "checkpoints" / "last.pt"), f"data.path={dali}",
           "data.backend=dali", *overrides]
    log("testing on the DALI copy: " + " ".join(cmd[2:]))
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"demo: evaluation failed; see {test_dir}")
    first = (test_dir / "test.txt").read_text().splitlines()[0]  # "top1 <fraction>"
    return float(first.split()[1])


def energy(run_dir: Path) -> tuple[float, float]:
    """(SOPs per image, SNN energy in mJ) from the test table."""
    last = (run_dir / "test-dali" / "test.txt").read_text().strip().splitlines()[-1]
    words = last.split()
    sops = float(words[words.index("SOPs/image") + 1])  # in G
    mj = float(words[words.index("energy") + 1])
    return sops * 1e9, mj


def gate_fitted(summary: dict) -> dict[str, float]:
    """Per-site fitted gate k; empty when the rule never left warm-up."""
    return {k.split("/")[1]: v for k, v in summary.items()
            if k.startswith("dassdp/") and k.endswith("/gate_k") and v == v}


def report(run_dir: Path, acc: float, train_s: float, wall: float, summary: dict) -> str:
    """The summary table and the machine-readable last line."""
    gates = gate_fitted(summary)
    dw = {k.split("/")[1]: v for k, v in summary.items() if k.endswith("/dw_abs")}
    sops, mj = energy(run_dir)
    rows = [("test top-1 (DALI copy, 10,000 images)", f"{acc:.4f}"),
            ("best val top-1 during training (FFCV)", f"{summary.get('best_acc1', float('nan')):.4f}"),
            ("training images/s (last epoch)", f"{summary.get('img_per_s', float('nan')):.0f}"),
            ("optimizer steps", f"{summary.get('steps')}"),
            ("SOPs per image / SNN energy", f"{sops / 1e6:.2f} M / {mj:.4f} mJ"),
            *[(f"DA-SSDP gate k, {site}", f"{k:+.4f} (mean |dW| {dw.get(site, float('nan')):.2e})")
              for site, k in gates.items()],
            ("training time (dassdp-train, start to exit)", f"{train_s:.0f} s"),
            ("wall time (whole demo)", f"{wall:.0f} s"),
            ("run folder", str(run_dir)),
            ("curves", str(run_dir / "plots"))]
    width = max(len(a) for a, _ in rows)
    lines = ["", "=" * (width + 30)] + [f"{a:<{width}}  {b}" for a, b in rows] + ["=" * (width + 30)]
    k = gates.get("classifier", next(iter(gates.values()), float("nan")))
    lines.append(f"demo: test_acc={acc:.4f} train_s={train_s:.0f} wall_s={wall:.0f} gate_k={k:.4f} "
                 f"run_dir={run_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the whole demo; exit 1 when the gate was never fitted or applied."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/demo-<YYYYmmdd-HHMMSS>")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("overrides", nargs="*", help="dotted overrides for training, e.g. train.epochs=1")
    args = p.parse_args(argv)
    t0 = time.time()
    run_dir = (args.run_dir or ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    paths = convert_data(args.data_dir.resolve())
    train_s = train(run_dir, paths["ffcv"], args.overrides)
    acc = test_on_dali(run_dir, paths["dali"], args.overrides)
    from tools.plot_run import main as plot_main

    plot_main([str(run_dir)])
    summary = json.loads((run_dir / "summary.json").read_text())
    wall = time.time() - t0
    print(report(run_dir, acc, train_s, wall, summary))
    gates = gate_fitted(summary)
    if not gates or not all(v > 0 for k, v in summary.items() if k.endswith("/dw_abs")):
        print("demo: DA-SSDP never left warm-up (no fitted gate or no applied update); "
              "lower dassdp.warmup_steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
