"""`dassdp-bench e2e --set config=FILE`: a shipped config trained as a user runs it, in a subprocess.

Ours: `python -m launch.train --config FILE` changed only in data.path (CIFAR-format files written by
tools/bench/cifar_data.py), data.batch_size, the step count (train.max_steps_per_epoch and
train.stop_after_steps), train.output_dir and log.every_steps=1, plus any `overrides`. Per-step seconds
come from the run's metrics/steps.jsonl (batch / img_per_s: wall time between two log points, data wait
included). With `--official PATH`: the official `main.py` on the same files through official_e2e.py,
stopped after the same number of steps; its per-step seconds are the gaps between the arrivals of its
per-step log lines. Both sides run as fresh processes in interleaved rounds (A B | B A ...).

Per run: images/s over the steps after the first `warmup_steps`; start-up = launch to the end of the first
step; peak RSS = the largest single process (os.wait4's ru_maxrss: the trainer, or a reaped loader
worker); peak tree RSS = the largest sum of VmRSS over the process and its descendants, sampled every
POLL_S (shared pages counted once per process).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("official_e2e.py")
POLL_S = 0.05
OFFICIAL_STEP = re.compile(r"\[(\d+)/(\d+)\] it/s:")  # main.py's per-step debug line
TESTED_AGAINST = ("the official side's command (tools/bench/e2e_shipped.official_command) was checked "
                  "against xyshi2000/SpikingResformer 3f75127; another revision may need other adaptations "
                  "(tools/bench/official_e2e.py)")


@dataclass
class Run:
    """One training process: its per-step seconds and what it cost to start and hold."""

    side: str
    step_s: list[float] = field(default_factory=list)
    startup_s: float = float("nan")
    peak_rss_mib: float = 0.0
    peak_tree_rss_mib: float = 0.0
    details: dict = field(default_factory=dict)  # kept in the side's records (ours: resolved precision)

    def images_per_s(self, batch: int, warmup: int) -> float:
        """Training images/s over the steps after the first `warmup`."""
        timed = self.step_s[warmup:]
        return batch * len(timed) / sum(timed)


def ours_command(config: Path, data: Path, out: Path, s: dict) -> list[str]:
    """`python -m launch.train` on the shipped config, changed only where the module docstring says."""
    n = s["steps"]
    return [sys.executable, "-m", "launch.train", "--config", str(config), f"data.path='{data}'",
            f"data.batch_size={s['batch_size']}", f"train.max_steps_per_epoch={n}",
            f"train.stop_after_steps={n}", f"train.output_dir='{out}'", "log.every_steps=1", *s["overrides"]]


def find_checkout(path: str) -> tuple[Path, Path | None]:
    """(the official checkout holding main.py, its sj014/ folder or None); SystemExit in one line."""
    root = Path(path).expanduser().resolve()
    for checkout in (root, root / "SpikingResformer"):
        if (checkout / "main.py").is_file():
            sj = [p for p in (root / "sj014", checkout / "sj014", checkout.parent / "sj014") if p.is_dir()]
            return checkout, (sj[0] if sj else None)
    raise SystemExit(f"dassdp-bench e2e: --official {path}: neither {root / 'main.py'} nor "
                     f"{root / 'SpikingResformer' / 'main.py'} exists; pass the official SpikingResformer "
                     "checkout (see docs/benchmarks.md)")


def official_command(checkout: Path, sj014: Path | None, data: Path, out: Path, s: dict,
                     n_train: int) -> tuple[list[str], dict[str, str]]:
    """The official run (argv, environment); checked against the official checkout at 3f75127, assumptions in
    docs/benchmarks.md.

    main.py logs `[i/len] it/s: ...` every len/print_freq steps: print_freq = len(loader) logs every step.
    """
    config = checkout / s["official_config"]
    if not config.is_file():
        raise SystemExit(f"dassdp-bench e2e: {config} does not exist: set official_config to the official "
                         "config matching the shipped one")
    per_epoch = n_train // s["batch_size"]  # timm's training loader drops the last partial batch
    argv = [sys.executable, str(LAUNCHER), "--", "-c", str(config), "--data-path", str(data),
            "--output-dir", str(out), "--batch-size", str(s["batch_size"]), "--epochs", "1",
            "--print-freq", str(per_epoch), *s["official_args"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(sj014)] if sj014 else []), str(checkout)])}
    return argv, env


def tree_rss_kib(pid: int) -> int:
    """VmRSS of `pid` and all its descendants, KiB (0 for processes already gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):  # gone, or a zombie without VmRSS
            continue
    return total


class StepCounter:
    """Steps finished so far, read from a run's file: steps.jsonl lines, or the official log's step lines."""

    def __init__(self, path: Path, pattern: re.Pattern | None):
        self.path, self.pattern = path, pattern

    def __call__(self) -> int:
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return 0
        return len(self.pattern.findall(text)) if self.pattern else len([x for x in text.splitlines() if x])


def watch(run: Run, cmd: list[str], *, cwd: Path, env: dict | None, log: Path, steps: StepCounter,
          want: int, stop: bool, timeout: float) -> list[float]:
    """Run `cmd` to its end (or SIGTERM it after `want` steps when `stop`); returns step arrival times."""
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: loader workers stop with it
    arrivals: list[float] = []
    peak_tree, signalled = 0, None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            done, now = steps(), time.perf_counter() - t0  # read after wait4: an exit's last steps count
            arrivals += [now] * max(0, min(done, want) - len(arrivals))
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            peak_tree = max(peak_tree, tree_rss_kib(proc.pid))
            if stop and signalled is None and len(arrivals) >= want:
                os.killpg(proc.pid, signal.SIGTERM)
                signalled = now
            if signalled is not None and now > signalled + 30:
                raise SystemExit(f"dassdp-bench e2e: the {run.side} run did not end within 30 s of SIGTERM "
                                 f"after its {want} steps; its output is in {log}")
            if now > timeout:
                raise SystemExit(f"dassdp-bench e2e: the {run.side} run passed timeout_s={timeout:.0f} after "
                                 f"{len(arrivals)} of {want} steps; its output is in {log}")
            time.sleep(POLL_S)
    finally:
        if proc.returncode is None:  # a timeout or an interrupt: leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if len(arrivals) < want:
        raise SystemExit(f"dassdp-bench e2e: the {run.side} run exited with status {proc.returncode} after "
                         f"{len(arrivals)} of {want} steps; its output is in {log}")
    run.startup_s = arrivals[0]
    run.peak_rss_mib = usage.ru_maxrss / 1024  # KiB on Linux
    run.peak_tree_rss_mib = peak_tree / 1024
    return arrivals


def run_ours(config: Path, data: Path, folder: Path, s: dict) -> Run:
    """One run of the shipped config; per-step seconds from its metrics."""
    import json

    run, out = Run("ours"), folder / "run"
    steps_file = out / "metrics" / "steps.jsonl"
    cmd = ours_command(config, data, out, s)
    watch(run, cmd, cwd=REPO, env=None, log=folder / "output.log",
          steps=StepCounter(steps_file, None), want=s["steps"], stop=False, timeout=s["timeout_s"])
    rows = [json.loads(line) for line in steps_file.read_text().splitlines() if line]
    run.step_s = [s["batch_size"] / r["img_per_s"] for r in rows[:s["steps"]]]
    info = json.loads((out / "run.json").read_text())
    run.details = {"precision": info.get("precision"), "command": shlex.join(["python", *cmd[1:]])}
    return run


def run_official(checkout: Path, sj014: Path | None, data: Path, folder: Path, s: dict,
                 n_train: int) -> Run:
    """One run of the official main.py, stopped after `steps` steps; per-step seconds from its log."""
    run, log = Run("official"), folder / "output.log"
    cmd, env = official_command(checkout, sj014, data, folder / "run", s, n_train)
    run.details = {"command": shlex.join(["python", *cmd[1:]]),
                   "label": f"main.py -c {s['official_config']}, B={s['batch_size']}"}
    arrivals = watch(run, cmd, cwd=checkout, env=env, log=log, steps=StepCounter(log, OFFICIAL_STEP),
                     want=s["steps"], stop=True, timeout=s["timeout_s"])
    run.step_s = [b - a for a, b in zip([0.0, *arrivals], arrivals)]
    return run


def fresh(folder: Path) -> Path:
    """An empty folder (the previous round's run removed)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run_shipped(bench, s: dict, cache: Path) -> None:
    """Write the data, run ours (and the official script) in interleaved rounds; record figures, ratios."""
    from launch.config import load_config
    from launch.errors import ConfigError, one_line
    from tools.bench.cifar_data import build_cifar

    config = Path(s["config"]).expanduser().resolve()
    try:  # a bad key or file fails here, before any run
        cfg = load_config(config, s["overrides"], notice=lambda msg: None)
    except ConfigError as err:
        raise SystemExit(f"dassdp-bench e2e: config={s['config']}: {one_line(err)}") from None
    if s["steps"] <= s["warmup_steps"] or s["images"] < s["batch_size"] * s["steps"]:
        raise SystemExit(f"dassdp-bench e2e: steps={s['steps']} must exceed warmup_steps={s['warmup_steps']} "
                         f"and images={s['images']} must hold steps x batch_size={s['batch_size']} images")
    data = build_cifar(cache / f"cifar-{cfg.data.dataset}-{s['images']}-{s['val_images']}", cfg.data.dataset,
                       s["images"], s["val_images"])
    runs_dir = cache / "e2e-runs"
    sides = {"ours": lambda folder: run_ours(config, data, folder, s)}
    if s["official_path"]:
        checkout, sj014 = find_checkout(s["official_path"])
        sides["official"] = lambda folder: run_official(checkout, sj014, data, folder, s, s["images"])
        bench.notes.append(f"e2e: official side from {checkout} (spikingjelly from {sj014 or 'the venv'}); "
                           f"{TESTED_AGAINST}")
    else:
        skipped = "e2e: official side skipped: no --official PATH given; ours ran alone"
        bench.notes.append(skipped)
        print(f"[dassdp-bench] {skipped}", flush=True)
    runs: dict[str, list[Run]] = {side: [] for side in sides}
    order = list(sides)
    for r in range(s["repeats"]):
        for side in (order if r % 2 == 0 else order[::-1]):  # A B | B A: drifts fall on both sides
            done = sides[side](fresh(runs_dir / side))
            runs[side].append(done)
            print(f"[dassdp-bench] e2e round {r + 1}/{s['repeats']} {side}: "
                  f"{done.images_per_s(s['batch_size'], s['warmup_steps']):.3g} images/s", flush=True)
    record(bench, runs, s, f"{config.name}, B={s['batch_size']}, {cfg.model.name}")


def record(bench, runs: dict[str, list[Run]], s: dict, label: str) -> None:
    """Per side: images/s, start-up, peak RSS over the rounds; ours / official per round."""
    B, w = s["batch_size"], s["warmup_steps"]
    extra = {"label": label, "steps": s["steps"], "steps_excluded": w, "batch_size": B}
    rates = {side: [r.images_per_s(B, w) for r in rs] for side, rs in runs.items()}
    for side, rs in runs.items():
        more = {**extra, **rs[-1].details}
        bench.add(side, "train_images_per_s", "images/s", rates[side], **more)
        bench.add(side, "startup_s", "s", [r.startup_s for r in rs], **more)
        bench.add(side, "peak_rss_mib", "MiB", [r.peak_rss_mib for r in rs], **more)
        bench.add(side, "peak_tree_rss_mib", "MiB", [r.peak_tree_rss_mib for r in rs], **more)
    if "official" in rates:
        per_round = [a / b for a, b in zip(rates["ours"], rates["official"])]
        bench.add_ratio("ours", "official", "train_images_per_s", per_round, **extra)
