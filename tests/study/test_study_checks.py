"""dassdp-study without training: the statistics, the core split, and refusals of bad studies."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from scipy import stats
from study_helpers import study, tiny

from tools.study import launchers
from tools.study.report import paired
from tools.study.study import Run


def test_paired_statistics_against_the_textbook_formulas():
    ref, other = [0.80, 0.82, 0.79, 0.81, 0.80], [0.81, 0.83, 0.79, 0.83, 0.805]
    d = np.subtract(other, ref)
    s = paired(ref, other)
    assert s["n"] == 5 and s["per_seed"] == pytest.approx(d) and s["mean"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 4) * np.sqrt(((d - d.mean()) ** 2).sum() / 4) / np.sqrt(5)
    assert s["t_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(5))
    assert s["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 4))
    lo, hi = s["bootstrap_ci"]
    assert d.min() <= lo < d.mean() < hi <= d.max()
    assert paired(ref, other)["bootstrap_ci"] == [lo, hi]  # fixed RNG seed: the same report every time
    one = paired([0.8], [0.9])
    assert one["mean"] == pytest.approx(0.1) and one["t_ci"] is one["bootstrap_ci"] is one["p_value"] is None


def test_local_launcher_splits_the_cores_without_oversubscribing(tmp_path, monkeypatch):
    cores = sorted(os.sched_getaffinity(0))
    n = min(2, len(cores))
    probe = "import os; print(os.environ.get('OMP_NUM_THREADS'), sorted(os.sched_getaffinity(0)))"
    monkeypatch.setattr(launchers, "train_command", lambda run, gpus=0: [sys.executable, "-c", probe])
    runs = [Run("a", k, k, tmp_path / f"a/seed-{k}", ()) for k in range(3)]
    assert launchers.run_local(runs, n, say=lambda m: None) == {r.name: 0 for r in runs}
    seen = [r.log.read_text().splitlines()[-1] for r in runs]
    if n > 1:  # each process: its own cores, as many threads as cores
        per = len(cores) // n
        allowed = {f"{per} {cores[i * per:(i + 1) * per]}" for i in range(n)}
        assert set(seen) <= allowed and len(set(seen)) == n
    with pytest.raises(launchers.StudyError, match="--parallel"):
        launchers.core_slots(len(cores) + 1)


def test_refusals_are_one_line_and_write_nothing(tmp_path, fmnist_small):
    base = ["run", "--config", "configs/smoke.yaml", "--seeds", "2", *tiny(fmnist_small)]
    cases = [(["--arm", "a", "dassdp.enabld=true", "--arm", "b"], "dassdp.enabled"),  # names the key
             (["--arm", "a", "optim.lr=2e-3", "--arm", "b"], "resolve to the same config"),
             (["--arm", "only"], "two or more arms"),
             (["--arm", "a", "train.seed=1", "--arm", "b", "train.seed=2"], "train.seed")]
    for i, (arms, message) in enumerate(cases):
        out = tmp_path / f"s{i}"
        proc = study(*base, "--out", out, *arms)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()
