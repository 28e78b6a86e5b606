"""SIGKILL at seeded random points of a tiny training run and of a conversion; resume == uninterrupted."""
from __future__ import annotations

import io
import json
import os
import random
from functools import partial
from pathlib import Path

import faults_tally
import pytest
import torch
from faults_helpers import Counter, in_child, install_counted_model

# the real spikingresformer_tiny + real DA-SSDP hook on the trainer tests' in-memory loader, 16 px, T=2
ARGS = ["model.name=spikingresformer_tiny", "model.T=2", "model.num_classes=4", "data.input_size=[3,16,16]",
        "data.batch_size=8", "train.amp=false", "log.every_steps=2", "sched.warmup_epochs=1", "optim.lr=1e-2",
        "train.epochs=2", "train.save_every_steps=1", "dassdp.warmup_steps=3", "log.progress=false"]
N_SAMPLES = 32  # 4 steps per epoch, 8 optimizer steps, 2 evaluations of 4 batches


def _train(out: Path, counter: Counter, resume: bool) -> int:
    """Child body: instrument the model, torch.save and os.replace, then run the real entry point."""
    from launch import checkpoint
    from launch.train import main

    install_counted_model(N_SAMPLES, counter.hit)

    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *a, **kw):
        buf = io.BytesIO()
        real_save(obj, buf, *a, **kw)
        data = buf.getvalue()
        if counter.kill == ("ckpt_write", counter.n.get("ckpt_write", 0) + 1):
            f.write(data[: len(data) // 2])  # a torn write of the temporary file
            f.flush()
        counter.hit("ckpt_write")
        f.write(data)

    def replace(src, dst):
        counter.hit("replace")  # killed before the rename: a complete temporary file, old final file
        real_replace(src, dst)

    checkpoint.torch.save = save
    checkpoint.os.replace = replace
    rc = main([*ARGS, "--output-dir", str(out), *(["--resume", "auto"] if resume else [])])
    (out / "counts.json").write_text(json.dumps(counter.n))
    return rc


def _final_files_whole(out: Path) -> list[str]:
    """Every file under a final name in checkpoints/ reads back completely; returns the names checked."""
    from safetensors.torch import load_file

    from launch.checkpoint import load_checkpoint

    names = []
    for p in sorted((out / "checkpoints").glob("*")) if (out / "checkpoints").is_dir() else []:
        if p.name.startswith("."):
            continue  # temporary files are never under a final name
        if p.suffix == ".pt":
            load_checkpoint(p)
        elif p.suffix == ".safetensors":
            load_file(p)
        names.append(p.name)
    for name in ("summary.json", "run.json"):
        if (out / name).exists():
            json.loads((out / name).read_text())
    return names


def _final_model(out: Path) -> dict:
    from launch.checkpoint import load_checkpoint

    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def _plan(counts: dict, n_points: int, seed: int) -> list[tuple[str, int]]:
    """Seeded kill points, every kind at least once: (kind, n-th event of that kind)."""
    rng = random.Random(seed)
    kinds = ["step", "ckpt_write", "eval", "replace"]
    kinds += [rng.choice(kinds) for _ in range(n_points - len(kinds))]
    return [(k, rng.randint(1, counts[k])) for k in kinds]


def _kill_and_resume(tmp_path: Path, n_points: int, seed: int):
    ref = tmp_path / "ref"
    rc = in_child(partial(_train, ref, Counter(), False), tmp_path / "ref.log")
    assert rc == 0, (tmp_path / "ref.log").read_text()[-3000:]
    counts = json.loads((ref / "counts.json").read_text())
    assert counts["step"] == 8 and counts["eval"] == 8 and counts["ckpt_write"] >= 8, counts
    want = _final_model(ref)
    for i, point in enumerate(_plan(counts, n_points, seed)):
        out, log = tmp_path / f"k{i}", tmp_path / f"k{i}.log"
        rc = in_child(partial(_train, out, Counter(point), False), log)
        assert rc == -9, f"{point}: not killed (rc {rc}): {log.read_text()[-2000:]}"
        assert not (out / "counts.json").exists()
        _final_files_whole(out)
        rc = in_child(partial(_train, out, Counter(), True), log)
        assert rc == 0, f"{point}: resume failed: {log.read_text()[-3000:]}"
        got = _final_model(out)
        same = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        faults_tally.fault(f"train SIGKILL at {point[0]} #{point[1]}", same)
        assert same, f"{point}: resumed weights differ from the uninterrupted run"


def test_sigkill_training_then_resume_is_bit_identical(tmp_path):
    _kill_and_resume(tmp_path, n_points=5, seed=10)


@pytest.mark.long_faults
def test_sigkill_training_many_points(tmp_path):
    _kill_and_resume(tmp_path, n_points=16, seed=11)
