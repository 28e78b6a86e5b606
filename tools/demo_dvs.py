"""`make demo-dvs`: the CIFAR10-DVS transfer walk-through, end to end on a CPU in a few minutes.

    python -m tools.demo_dvs [--work DIR] [--tiny]

1. builds a small CIFAR10-DVS tree in tonic's layout `DIR/src/CIFAR10DVS/<class>/*.aedat4` with dv-processing:
   synthetic DVS128 recordings (a bright bar sweeping across the sensor in a class-specific direction, 36 deg
   apart, with jitter and background noise) plus the real `tests/data/events/sample.aedat4` (a 320x240
   sensor, kept in the repo) rescaled into the 128x128 sensor (see `add_real_recording`);
2. converts it with `dassdp-convert cifar10dvs ... --T T --train-per-class N` (DALI frames format);
3. writes a stand-in for the official ImageNet checkpoint: `torch.save({"model": state_dict})` of a 1000-class
   spikingresformer_tiny (random weights; real users pass the official spikingresformer_s file);
4. fine-tunes with `dassdp-train --config configs/transfer/cifar10dvs.yaml --transfer CKPT` plus overrides
   that shrink it to CPU size (spikingresformer_tiny, T 2, 32 px, 108 steps, DA-SSDP warm-up 30 steps);
5. evaluates with `--test-only` (accuracy + SOP table); 6. prints a summary. The last line is
    demo-dvs: test_acc=<fraction> wall_s=<seconds> gate_fitted=<0|1> run_dir=<path>
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "transfer" / "cifar10dvs.yaml"
REAL_SAMPLE = ROOT / "tests" / "data" / "events" / "sample.aedat4"  # origin, licence: tests/data/README.md
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR = 128  # CIFAR10-DVS was recorded with a DVS128
T0_US = 1_600_000_000_000_000  # absolute timestamps, as DV writes them

# sizes: (train per class, val per class, T, epochs, steps per epoch, DA-SSDP warm-up steps, batch)
SIZES = {"full": dict(train=30, val=10, T=2, epochs=6, steps=18, warmup=30, batch=16),
         "tiny": dict(train=4, val=2, T=2, epochs=1, steps=4, warmup=2, batch=8)}


def log(msg: str) -> None:
    """A demo step, flushed before subprocess output."""
    print(f"[demo-dvs] {msg}", flush=True)


def bar_events(label: int, seed: int, steps: int = 40, duration_us: int = 400_000) -> np.ndarray:
    """A bright bar sweeping across a DVS128 in direction label*36 deg (+-6) -> events [n, 4] (t, x, y, p)."""
    rng = np.random.default_rng(seed)
    ang = math.radians(label * 36 + rng.uniform(-6, 6))
    u = np.array([math.cos(ang), math.sin(ang)])
    yy, xx = np.mgrid[0:SENSOR, 0:SENSOR]
    c = (SENSOR - 1) / 2 + rng.uniform(-10, 10, 2)
    s = (xx - c[0]) * u[0] + (yy - c[1]) * u[1]  # [H, W] signed distance along the motion
    width, start = rng.uniform(8, 16), rng.uniform(-70, -50)
    speed = rng.uniform(100, 130) / steps  # pixels per step
    out, prev = [], np.abs(s - start) <= width / 2
    for k in range(1, steps + 1):
        cur = np.abs(s - (start + speed * k)) <= width / 2
        on, off = cur & ~prev, prev & ~cur  # leading edge brightens (ON), trailing edge darkens (OFF)
        for mask, pol in ((on, 1), (off, 0)):
            ys, xs = np.nonzero(mask & (rng.random(mask.shape) < 0.7))
            t = (k - 1 + rng.random(len(xs))) * duration_us / steps
            out.append(np.stack([t, xs, ys, np.full(len(xs), pol)], 1))
        prev = cur
    n_noise = rng.integers(300, 600)  # background activity
    out.append(np.stack([rng.uniform(0, duration_us, n_noise), rng.integers(0, SENSOR, n_noise),
                         rng.integers(0, SENSOR, n_noise), rng.integers(0, 2, n_noise)], 1))
    ev = np.concatenate(out)
    return ev[np.argsort(ev[:, 0], kind="stable")].astype(np.int64)  # [n, 4]


def write_aedat4(path: Path, ev: np.ndarray, size: tuple[int, int] = (SENSOR, SENSOR)) -> None:
    """Events [n, 4] (t us, x, y, p) -> an AEDAT4 file written by dv-processing (a DVS128 event stream)."""
    import dv_processing as dv

    store = dv.EventStore()
    for t, x, y, p in ev.tolist():
        store.push_back(T0_US + t, x, y, bool(p))
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig("DVS128", size))
    writer.writeEvents(store)
    del writer  # closes the file


def add_real_recording(dst: Path) -> str:
    """The real 320x240 recording scaled by 0.4 (aspect kept) into the 128x128 sensor -> one AEDAT4 file."""
    import tonic

    ev = tonic.io.read_aedat4(str(REAL_SAMPLE))
    t, x, y, p = (ev[n].astype(np.int64) for n in ev.dtype.names[:4])
    # 320x240 -> 128x96, centred vertically (rows 16..111); every event is kept. A plain `--crop` of the
    # original file at 128x128 would keep only the events of one corner (2,042 of 111,954).
    xs, ys = (x * 2) // 5, (y * 2) // 5 + 16
    write_aedat4(dst, np.stack([t - t.min(), xs, ys, p], 1))
    return f"{len(t):,} events of {REAL_SAMPLE.name} (320x240) scaled into 128x128 -> {dst}"


def build_tree(src: Path, n_train: int, n_val: int) -> list[str]:
    """tonic's CIFAR10DVS/<class>/*.aedat4 tree; returns notes about what was written."""
    base = src / "CIFAR10DVS"
    notes = []
    for label, name in enumerate(CLASSES):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_train + n_val):
            path = base / name / f"cifar10_{name}_{i + 1}.aedat4"
            if not path.is_file():
                write_aedat4(path, bar_events(label, seed=1000 * label + i))
    real = base / CLASSES[0] / f"cifar10_{CLASSES[0]}_0.aedat4"  # first in lexical order: a training sample
    notes.append(add_real_recording(real) if not real.is_file() else f"real recording (rescaled): {real}")
    return notes


def write_official_checkpoint(path: Path, name: str) -> None:
    """A checkpoint in the official SpikingResformer format: {"model": state_dict} of a 1000-class model."""
    import torch

    import models
    from models.config import ModelConfig

    torch.manual_seed(0)
    model = models.build_model(ModelConfig(name=name, T=4, num_classes=1000, img_size=224, in_channels=3,
                                           channels_last=False))
    torch.save({"model": model.state_dict()}, path)


def run(cmd: list[str], what: str) -> str:
    """Run a CLI as a user would, echo its output, fail with one line naming the step."""
    log("$ " + " ".join(str(c) for c in cmd))
    lines = []
    with subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:  # echoed as it comes (training takes minutes)
            print(line, end="", flush=True)
            lines.append(line)
    if proc.returncode != 0:
        raise SystemExit(f"demo-dvs: {what} failed (exit {proc.returncode}); see the output above")
    return "".join(lines)


def overrides(size: dict, data: Path, model: str) -> list[str]:
    """Shrink configs/transfer/cifar10dvs.yaml to CPU size (every other key stays the recipe's)."""
    return [f"data.path={data}", f"model.name={model}", f"model.T={size['T']}", "data.input_size=[3,32,32]",
            f"data.batch_size={size['batch']}", "data.workers=1", f"train.epochs={size['epochs']}",
            f"train.max_steps_per_epoch={size['steps']}", "train.amp=false", "sched.warmup_epochs=0",
            "sched.per_step=true",
            "optim.lr=2e-3",  # random stand-in weights, not ImageNet features: the recipe's 4e-5 is too low
            f"dassdp.warmup_steps={size['warmup']}", "log.every_steps=5", "log.progress=false"]


def summarise(run_dir: Path, test_out: str, transfer_line: str, wall: float, notes: list[str]) -> tuple:
    """Summary rows from summary.json and test.txt; returns (text, test_acc, gate_fitted)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    test = (run_dir / "test" / "test.txt").read_text().splitlines()
    acc = float(test[0].split()[1])  # "top1 <fraction>"
    gates = {k.split("/")[1]: v for k, v in summary.items() if k.endswith("/gate_k") and v == v}
    dw = {k.split("/")[1]: v for k, v in summary.items() if k.endswith("/dw_abs")}
    fitted = bool(gates) and all(v > 0 for v in dw.values())
    rows = [("transfer", transfer_line), ("test top-1 (val split)", f"{acc:.4f} (chance 0.10)"),
            ("optimizer steps", str(summary.get("steps"))),
            *[(f"DA-SSDP gate k, {s}", f"{k:+.4f} (mean |dW| {dw.get(s, float('nan')):.2e})")
              for s, k in gates.items()],
            ("SOP table", next((ln.strip() for ln in reversed(test) if "SOPs/image" in ln), "-")),
            *[("data", n) for n in notes], ("wall time", f"{wall:.0f} s"), ("run folder", str(run_dir))]
    width = max(len(a) for a, _ in rows)
    text = "\n".join(["=" * 72, *[f"{a:<{width}}  {b}" for a, b in rows], "=" * 72])
    return text, acc, fitted


def main(argv: list[str] | None = None) -> int:
    """Run the walk-through; exit 1 when DA-SSDP's gate was never fitted and applied."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "demo-dvs", help="work folder (reused)")
    p.add_argument("--tiny", action="store_true", help="a few samples and steps (tests)")
    p.add_argument("--model", default="spikingresformer_tiny", help="variant fine-tuned (small: CPU)")
    args = p.parse_args(argv)
    size, work, t0 = SIZES["tiny" if args.tiny else "full"], args.work.resolve(), time.time()
    work.mkdir(parents=True, exist_ok=True)
    log(f"1/6 recordings -> {work / 'src' / 'CIFAR10DVS'}")
    notes = build_tree(work / "src", size["train"], size["val"])
    data = work / f"cifar10dvs-t{size['T']}"
    log("2/6 conversion to event frames")
    run([sys.executable, "-m", "tools.convert.cli", "cifar10dvs", work / "src", data, "--format", "dali",
         "--T", size["T"], "--train-per-class", size["train"], "--overwrite", "--quiet", "--workers", 2],
        "conversion")
    ckpt = work / f"{args.model}_imagenet_official_format.pth"
    log(f"3/6 stand-in ImageNet checkpoint in the official format -> {ckpt}")
    write_official_checkpoint(ckpt, args.model)
    run_dir, ov = work / "run", overrides(size, data, args.model)
    log("4/6 fine-tuning with --transfer")
    out = run([sys.executable, "-m", "launch.train", "--config", CONFIG, "--transfer", ckpt,
               "--output-dir", run_dir, *ov], "fine-tuning")
    transfer_line = next((ln for ln in out.splitlines() if ln.startswith("transfer:")), "(no transfer line)")
    log("5/6 evaluation (--test-only)")
    test_out = run([sys.executable, "-m", "launch.train", "--config", CONFIG, "--output-dir",
                    run_dir / "test", "--test-only", "--resume", run_dir / "checkpoints" / "last.pt", *ov],
                   "evaluation")
    log("6/6 summary")
    text, acc, fitted = summarise(run_dir, test_out, transfer_line, time.time() - t0, notes)
    print(text)
    print(f"demo-dvs: test_acc={acc:.4f} wall_s={time.time() - t0:.0f} gate_fitted={int(fitted)} "
          f"run_dir={run_dir}")
    if not fitted:
        print("demo-dvs: DA-SSDP never left warm-up (no fitted gate or no applied update)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
