"""Runtime faults on the real entry point: no space left, non-finite loss, crashing loader worker, pickles."""
from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import faults_tally
import launch_toy as toy
import pytest
import torch
from launch_toy import TOY_ARGS

from launch.checkpoint import CheckpointLoadError, load_checkpoint


@pytest.fixture
def train(monkeypatch):
    """Call the real entry point with the trainer tests' stand-in parts; returns the exit status."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from launch.train import main

    def go(out, *overrides, fail_at=None, **kinds):
        toy.install(monkeypatch, fail_at=fail_at, n=32, **kinds)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        return main([*TOY_ARGS, "log.progress=false", "--output-dir", str(out), *overrides])

    return go


@pytest.fixture
def small_fs(tmp_path):
    """A 512 KiB tmpfs (root can mount one here); else None and the test uses a failing writer."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the filesystem of `folder` until only `leave` bytes stay free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_no_space_during_checkpoint(tmp_path, train, small_fs, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(run, "train.epochs=2", "train.stop_after_steps=2") == 0
    if small_fs is not None:
        shutil.copytree(run, small_fs / "run")
        run = small_fs / "run"
        _fill(small_fs, leave=12288)  # room for run.lock and the logs; the next checkpoint (~100 KB): none
    else:  # a failing writer: ENOSPC half way through torch.save
        from launch import checkpoint

        def full(obj, f, *a, **kw):
            f.write(b"x" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(checkpoint.torch, "save", full)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    rc = train(run, "train.epochs=2", "train.save_every_steps=1", "--resume", "auto")
    err = capsys.readouterr().err
    survived = (rc not in (0, 1) and "No space left on device" in err and "Traceback" not in err
                and (run / "checkpoints" / "last.pt").read_bytes() == before)
    load_checkpoint(run / "checkpoints" / "last.pt")
    faults_tally.fault("no space left during a checkpoint", survived)
    assert survived, f"rc {rc}: {err[-1500:]}"


def test_no_space_during_conversion(tmp_path, small_fs):
    from convert_data import make_jpeg_tree

    from tools.convert import ConvertError, convert

    if small_fs is None:
        pytest.skip("needs a mountable tmpfs (root); the checkpoint test covers the failing-writer path")
    tree = make_jpeg_tree(tmp_path / "src", n_train=4, n_val=2)
    _fill(small_fs, leave=8192)
    msg = ""
    try:
        convert("imagenet", tree, small_fs / "out", "dali", workers=1, progress=False)
    except ConvertError as e:
        msg = str(e)
    except Exception as e:  # noqa: BLE001 - recorded as not survived
        msg = f"BARE {type(e).__name__}: {e}"
    survived = "No space left on device" in msg and not msg.startswith("BARE")
    survived &= not (small_fs / "out" / "manifest.json").exists()
    faults_tally.fault("no space left during a conversion", survived)
    assert survived, msg


def test_nonfinite_loss_and_crashing_worker_leave_usable_checkpoint(tmp_path, train, monkeypatch, capsys):
    from launch import parts

    calls = {"n": 0}
    real = parts.Criterion.__call__

    def poisoned(self, out, target):  # the 7th loss is NaN
        calls["n"] += 1
        loss = real(self, out, target)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(parts.Criterion, "__call__", poisoned)
    rc = train(tmp_path / "nan", "train.epochs=3", "train.save_every_steps=2")
    err = capsys.readouterr().err
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    finite = all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    ok = rc == 3 and "non-finite loss" in err and "Traceback" not in err and finite and ck["step"] <= 6
    faults_tally.fault("non-finite loss", ok)
    assert ok, (rc, err[-1500:], ck["step"])
    monkeypatch.setattr(parts.Criterion, "__call__", real)
    rc = train(tmp_path / "crash", "train.epochs=2", fail_at=(1, 2))
    err = capsys.readouterr().err
    ck = load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")
    ok = rc == 5 and "data loader failed in epoch 1 at batch 2" in err and "Traceback" not in err
    ok &= (ck["epoch"], ck["batch"]) == (1, 2)  # the position of the failure, resumable
    faults_tally.fault("crashing loader worker", ok)
    assert ok, (rc, err[-1500:])


def test_resume_from_checkpoint_with_other_class_count(tmp_path, train, capsys):
    assert train(tmp_path / "r", "train.epochs=1", "train.stop_after_steps=1") == 0
    capsys.readouterr()
    rc = train(tmp_path / "r", "model.num_classes=5", "--resume", "auto")
    err = capsys.readouterr().err
    ok = rc == 2 and "classifier.weight" in err and "Traceback" not in err
    faults_tally.hostile("resume from a checkpoint with another class count", ok)
    assert ok, (rc, err[-1500:])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("FAULTS_PWNED", "/tmp/faults_pwned"),))


def test_crafted_pickle_refused_and_safetensors_accepted(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    import models
    from models.config import ModelConfig

    pwned = tmp_path / "pwned"
    monkeypatch.setenv("FAULTS_PWNED", str(pwned))
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": {"w": _Evil()}}))
    model = models.build_model(ModelConfig(name="spikingresformer_tiny", T=2, num_classes=4, img_size=16))
    cases = (("trainer checkpoint loader", lambda: load_checkpoint(bad), CheckpointLoadError),
             ("models.load_weights", lambda: models.load_weights(model, bad), models.CheckpointError))
    for name, fn, err in cases:
        try:
            fn()
            clean = False
        except err as e:
            clean = "evil.pt" in str(e)
        clean &= not pwned.exists()
        faults_tally.hostile(f"crafted code-executing pickle ({name})", clean)
        assert clean and not pwned.exists()
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    report = models.load_weights(model, st)
    assert not report.missing and not report.unexpected


