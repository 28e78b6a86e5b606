"""SIGKILL at seeded random points of a conversion (workers included); the rerun's files == a clean run's."""
from __future__ import annotations

import fcntl
import json
import os
import random
import sys
from functools import partial
from pathlib import Path

import faults_tally
import pytest
from faults_helpers import die, in_child

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from convert_data import make_jpeg_tree  # noqa: E402


class SharedCounter:
    """Counts events of every process of the run in one append-only file; kills at the chosen one."""

    def __init__(self, path: Path, kill: tuple[str, int] | None = None):
        self.path, self.kill = path, kill

    def hit(self, kind: str) -> None:
        """Record one `kind` event (any process or thread); SIGKILL the whole run when it is the chosen one.

        Append and count happen under one exclusive lock: two writer threads appending before either
        counted would both see n+1, and the chosen event n would pass without a kill.
        """
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.write(kind + "\n")
            f.flush()
            f.seek(0)
            n = f.read().split().count(kind)
            if self.kill == (kind, n):
                die()


def _convert(src: Path, out: Path, fmt: str, counter: SharedCounter) -> int:
    """Child body: count every fsync (file written, not yet renamed) and rename, run the conversion."""
    from tools.convert import convert

    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        counter.hit("fsync")
        real_fsync(fd)

    def replace(a, b):
        counter.hit("replace")
        real_replace(a, b)

    os.fsync, os.replace = fsync, replace
    convert("imagenet", src, out, fmt, shard_size=2, workers=1, progress=False)
    return 0


def _final(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and ".work" not in p.parts and ".tmp-" not in p.name}


def _kill_and_rerun(tmp_path: Path, fmt: str, n_points: int, seed: int) -> None:
    src = make_jpeg_tree(tmp_path / "src", n_train=4, n_val=3)
    ref, events = tmp_path / "ref", tmp_path / "ref.events"
    rc = in_child(partial(_convert, src, ref, fmt, SharedCounter(events)), tmp_path / "ref.log")
    assert rc == 0, (tmp_path / "ref.log").read_text()[-3000:]
    want = _final(ref)
    assert "manifest.json" in want
    seen = events.read_text().split()
    rng = random.Random(seed)
    for i in range(n_points):
        kind = ("fsync", "replace")[i % 2]
        point = (kind, rng.randint(1, seen.count(kind)))
        out, log = tmp_path / f"k{i}", tmp_path / f"k{i}.log"
        rc = in_child(partial(_convert, src, out, fmt, SharedCounter(tmp_path / f"k{i}.events", point)), log)
        assert rc == -9, f"{point}: not killed (rc {rc}): {log.read_text()[-2000:]}"
        partial_files = [k for k, v in _final(out).items() if want.get(k) != v]
        assert partial_files == [], f"{point}: files under a final name differ from the clean run's"
        rc = in_child(partial(_convert, src, out, fmt, SharedCounter(tmp_path / "rerun.events")), log)
        assert rc == 0, f"{point}: rerun failed: {log.read_text()[-3000:]}"
        same = _final(out) == want
        faults_tally.fault(f"convert({fmt}) SIGKILL at {kind} #{point[1]} of {seen.count(kind)}", same)
        assert same, f"{point}: rerun output differs from the clean run"
        json.loads((out / "manifest.json").read_text())


def test_sigkill_conversion_then_rerun_is_identical(tmp_path):
    _kill_and_rerun(tmp_path, "dali", n_points=4, seed=20)


@pytest.mark.long_faults
def test_sigkill_conversion_ffcv_many_points(tmp_path):
    _kill_and_rerun(tmp_path, "ffcv", n_points=8, seed=21)
