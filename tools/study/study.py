"""A study: arms x paired seeds of ordinary `launch.train` runs, its record and each run's state.

On-disk layout (OUT = the study folder):
    OUT/study.json                  config path + sha256, arms, seeds, shared overrides, base seed
    OUT/<arm>/seed-<k>/             a plain run folder (config.yaml, metrics/, summary.json, checkpoints/)
    OUT/<arm>/seed-<k>/train.log    the run's stdout and stderr, appended per attempt
    OUT/<arm>/seed-<k>/exit.json    written by the study when an attempt ends (exit status, command)
    OUT/report.{json,md}, OUT/*.png the report
Seed k of every arm trains with `train.seed = base + k`, so every arm starts from the same weights and
sees the same data order.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

STUDY_FILE = "study.json"
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyError(Exception):
    """A user error: one sentence, exit status 2, nothing deleted."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """One (arm, seed k) training run; `args` are its `launch.train` arguments."""

    arm: str
    k: int
    seed: int
    dir: Path
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.arm}/seed-{self.k}"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    def state(self) -> str:
        """`done` (complete summary.json), `failed` (last attempt exited non-zero), `unfinished` or `new`."""
        if is_complete(self.dir):
            return "done"
        exit_file = self.dir / "exit.json"
        if exit_file.is_file():
            try:
                if json.loads(exit_file.read_text()).get("rc") != 0:
                    return "failed"
            except json.JSONDecodeError:
                pass
        return "unfinished" if self.dir.exists() else "new"


def is_complete(run_dir: Path) -> bool:
    """True when the run wrote summary.json after its last configured epoch."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        epochs = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return summary.get("epochs", -1) >= epochs


@dataclass
class Study:
    out: Path
    config: Path
    config_sha256: str
    arms: list[Arm]
    seeds: int
    shared: list[str]
    base_seed: int
    interval: bool = True

    def identity(self) -> dict:
        """What must match for a folder to be reused: config content, arms, shared overrides."""
        return {"config_sha256": self.config_sha256, "shared": list(self.shared),
                "arms": {a.name: list(a.overrides) for a in self.arms}}

    def record(self) -> dict:
        return {"config": str(self.config), **self.identity(), "seeds": self.seeds,
                "base_seed": self.base_seed, "interval": self.interval}

    @classmethod
    def load(cls, out: Path) -> Study:
        """The study recorded in OUT/study.json."""
        path = Path(out) / STUDY_FILE
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StudyError(f"{path}: not a readable study record ({err}); pass a folder made by "
                             f"`dassdp-study run`") from None
        return cls(Path(out), Path(rec["config"]), rec["config_sha256"],
                   [Arm(n, tuple(o)) for n, o in rec["arms"].items()], int(rec["seeds"]), list(rec["shared"]),
                   int(rec["base_seed"]), bool(rec.get("interval", True)))

    def runs(self) -> list[Run]:
        """Every (arm, seed) run, seed-major so that a partial study is still paired."""
        runs = []
        for k in range(self.seeds):
            for arm in self.arms:
                d = self.out / arm.name / f"seed-{k}"
                args = ("--config", str(self.config), "--output-dir", str(d), "--resume", "auto",
                        "log.progress=false", *self.shared, *arm.overrides,
                        f"train.seed={self.base_seed + k}")
                runs.append(Run(arm.name, k, self.base_seed + k, d, args))
        return runs


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve(config: Path, overrides: list[str], what: str) -> dict:
    """The resolved config, through the trainer's own `--print-config` (its strict key checks)."""
    cmd = [sys.executable, "-m", "launch.train", "--config", str(config), "--print-config", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
        msg = lines[-1].removeprefix("dassdp-train: config error: ") if lines else f"exit {done.returncode}"
        raise StudyError(f"{what}: {msg}")
    return yaml.safe_load(done.stdout)


def parse_arms(specs: list[list[str]]) -> list[Arm]:
    """`--arm NAME KEY=VALUE ...` groups -> arms (two or more, distinct names)."""
    arms = []
    for spec in specs or []:
        name, overrides = spec[0], tuple(spec[1:])
        if not ARM_NAME.match(name) or "=" in name:
            raise StudyError(f"--arm {name}: an arm starts with its name (letters, digits, _.+-), then its "
                             f"KEY=VALUE overrides, e.g. --arm baseline dassdp.enabled=false")
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise StudyError(f"--arm {name}: {bad[0]!r} is not a KEY=VALUE override")
        if any(a.name == name for a in arms):
            raise StudyError(f"--arm {name} is given twice; give each arm its own name")
        arms.append(Arm(name, overrides))
    if len(arms) < 2:
        raise StudyError("a study needs two or more arms: --arm NAME [KEY=VALUE ...] --arm NAME [...]")
    return arms


def prepare(out: Path, config: Path, arms: list[Arm], seeds: int, shared: list[str], interval: bool) -> Study:
    """Check the arms against the trainer's schema and the folder's record; write study.json."""
    if not Path(config).is_file():
        raise StudyError(f"--config {config}: no such file")
    if seeds < 1 or (interval and seeds < 2):
        raise StudyError(f"--seeds {seeds}: a confidence interval needs 2 or more paired seeds; use "
                         f"--seeds 2 or more, or --no-interval for per-arm numbers only")
    out, config = Path(out), Path(config).resolve()
    study = Study(out, config, file_sha256(config), arms, seeds, list(shared), 0, interval)
    old = _existing(out)
    if old is not None:
        if old.identity() != study.identity():
            raise StudyError(f"{out / STUDY_FILE} records another study ({_difference(old, study)}); use "
                             f"another --out, or the same config, arms and shared overrides")
        study.base_seed = old.base_seed  # validated when the folder was made
    else:
        study.base_seed = _validate_arms(config, arms, list(shared))
    out.mkdir(parents=True, exist_ok=True)
    (out / STUDY_FILE).write_text(json.dumps(study.record(), indent=2) + "\n")
    return study


def _existing(out: Path) -> Study | None:
    if (out / STUDY_FILE).is_file():
        return Study.load(out)
    if out.is_dir() and any(out.iterdir()):
        raise StudyError(f"--out {out}: the folder exists, holds files and no {STUDY_FILE}; pass a new or "
                         f"empty folder")
    return None


def _difference(old: Study, new: Study) -> str:
    if old.config_sha256 != new.config_sha256:
        return f"made with config {old.config} of another content"
    if old.shared != new.shared:
        return f"shared overrides {old.shared}"
    return "arms " + "; ".join(f"{a.name} {' '.join(a.overrides)}".strip() for a in old.arms)


def _validate_arms(config: Path, arms: list[Arm], shared: list[str]) -> int:
    """Resolve every arm (in parallel); refuse identical arms or arms with different base seeds."""
    with ThreadPoolExecutor(len(arms)) as pool:
        resolved = list(pool.map(lambda a: resolve(config, [*shared, *a.overrides], f"arm {a.name}"), arms))
    for i, a in enumerate(arms):
        for b, rb in zip(arms[i + 1:], resolved[i + 1:]):
            if resolved[i] == rb:
                raise StudyError(f"arms {a.name} and {b.name} resolve to the same config; make them differ "
                                 f"in at least one key")
    seeds = {a.name: r["train"]["seed"] for a, r in zip(arms, resolved)}
    if len(set(seeds.values())) > 1:
        raise StudyError(f"the arms set different train.seed values {seeds}; the study pairs seeds itself "
                         f"(train.seed + k), so leave train.seed out of the arms")
    return int(next(iter(seeds.values())))
