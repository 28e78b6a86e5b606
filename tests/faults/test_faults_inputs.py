"""Corrupt and hostile inputs: each one clear error naming the culprit, within a timeout, never a hang."""
from __future__ import annotations

import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import faults_tally
import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "convert"))
sys.path.insert(0, str(TESTS / "pipelines"))
from convert_data import make_dvs_trees, make_jpeg_tree  # noqa: E402
from pl_fixtures import write_dali_arrays  # noqa: E402


@contextmanager
def deadline(seconds: int):
    """Raise TimeoutError if the block takes longer (a hang is a failure, not a wait)."""
    def boom(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def rejected(name: str, fn, errors, *needles: str, seconds: int = 60) -> str:
    """Run fn: it must raise one of `errors` whose message names every needle; counts the outcome."""
    msg, clean = "<no error>", False
    try:
        with deadline(seconds):
            fn()
    except errors as e:
        msg = str(e)
        clean = bool(msg.strip()) and all(n in msg for n in needles) and len(msg) < 1200
    except Exception as e:  # noqa: BLE001 - a wrong error type is a recorded failure
        msg = f"{type(e).__name__}: {e}"
    faults_tally.hostile(name, clean)
    assert clean, f"{name}: not a clean rejection: {msg[:600]}"
    return msg


# ----------------------------------------------------------------------------- conversion inputs
def _convert(*a, **kw):
    from tools.convert import convert

    return convert(*a, workers=1, progress=False, **kw)


def test_conversion_inputs(tmp_path):
    from tools.convert import ConvertError

    tree = make_jpeg_tree(tmp_path / "jpg", n_train=2, n_val=1)
    bad = sorted((tree / "train" / "dog").iterdir())[0]
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(200))
    rejected("bad JPEG bytes (convert)", lambda: _convert("imagenet", tree, tmp_path / "o1", "dali"),
             ConvertError, bad.name)
    assert not (tmp_path / "o1" / "manifest.json").exists()
    tree2 = make_jpeg_tree(tmp_path / "jpg2", n_train=2, n_val=1)
    (tree2 / "train" / "empty").mkdir()
    rejected("empty class folder", lambda: _convert("imagenet", tree2, tmp_path / "o2", "dali"),
             ConvertError, "empty")
    a2, _ = make_dvs_trees(tmp_path / "dvs", classes=("cat", "dog"), per_class=2, n_events=300)
    rec = a2 / "cat" / "cifar10_cat_1.aedat"
    whole = rec.read_bytes()
    kw = dict(T=2, train_per_class=1)
    for what, data in (("truncated", whole[: len(whole) * 2 // 3 + 3]),
                       ("garbage", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))):
        rec.write_bytes(data)
        shutil.rmtree(tmp_path / "o3", ignore_errors=True)
        rejected(f"{what} AEDAT", lambda: _convert("cifar10dvs", a2, tmp_path / "o3", "dali", **kw),
                 ConvertError, rec.name)
        assert not (tmp_path / "o3" / "manifest.json").exists()
    man = _convert("cifar10dvs", a2, tmp_path / "o4", "dali", skip_corrupt=True, **kw)  # a counted skip
    assert [s["file"] for s in man["skipped"]] == [str(rec)]


# ----------------------------------------------------------------------------- loader inputs
def _frames_cfg(path):
    from pipelines import DataConfig

    return DataConfig(dataset="cifar10dvs", backend="dvs", path=str(path), batch_size=4, workers=1,
                      input_size=[3, 16, 16])


def _drain(cfg, T=2):
    from pipelines import build_loader

    for split in ("val", "train"):
        for _ in build_loader(cfg, split, T=T):
            pass


def test_frame_array_inputs(tmp_path):
    from pipelines import DataError

    rng = np.random.default_rng(0)

    def data():
        return {s: (rng.poisson(0.4, (n, 2, 2, 16, 16)).astype(np.uint16), rng.integers(0, 10, n))
                for s, n in (("train", 8), ("val", 4))}

    classes = [str(k) for k in range(10)]
    ok = write_dali_arrays(tmp_path / "ok", "frames", data(), classes)
    _drain(_frames_cfg(ok))  # the untouched layout reads fine: the errors below come from the damage
    nan = data()
    nan["val"] = (nan["val"][0].astype(np.float32), nan["val"][1])
    nan["val"][0][0, 0, 0, 0, 0] = np.nan
    shape = data()
    shape["val"] = (shape["val"][0][:, :, :1], shape["val"][1])
    label = data()
    label["val"][1][2] = 10
    for name, d, needle in (("NaN-filled float frame array", nan, "frames-00000.npy"),
                            ("wrong-shape frame array", shape, "frames-00000.npy"),
                            ("label outside the class range", label, "label 10")):
        p = write_dali_arrays(tmp_path / name.replace(" ", "_"), "frames", d, classes)
        rejected(name, lambda p=p: _drain(_frames_cfg(p)), DataError, needle)


def test_loader_bad_jpeg_and_truncated_beton(tmp_path):
    from pipelines import DataConfig, DataError

    tree = make_jpeg_tree(tmp_path / "jpg", n_train=3, n_val=2)
    out = tmp_path / "ffcv"
    _convert("imagenet", tree, out, "ffcv")
    beton = out / "train.beton"
    beton.write_bytes(beton.read_bytes()[: beton.stat().st_size // 2])
    cfg = DataConfig(dataset="folder", backend="ffcv", path=str(out), batch_size=2, workers=1,
                     input_size=[3, 16, 16], num_classes=2)
    rejected("truncated .beton", lambda: _drain(cfg), (DataError, ValueError, OSError), "train.beton")
    bad = sorted((tree / "val" / "cat").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:40])
    cfg = DataConfig(dataset="folder", backend="torchvision", path=str(tree), batch_size=2, workers=1,
                     input_size=[3, 16, 16], num_classes=2)
    rejected("bad JPEG bytes (torchvision loader, 1 worker)", lambda: _drain(cfg), DataError, bad.name)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("override,needle", [
    ("optim.bogus_key=1", "bogus_key"), ("train.epochs=many", "train.epochs"), ("optim.lr=-0.1", "optim.lr"),
    ("model.T=0", "model.T"), ("data.batch_size=0", "data.batch_size"), ("data.input_size=3", "input_size"),
])
def test_config_inputs(override, needle):
    from launch.config import ConfigError, load_config

    smoke = TESTS.parent / "configs" / "smoke.yaml"
    rejected(f"config {override}", lambda: load_config(smoke, [override], notice=lambda *_: 0),
             ConfigError, needle)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_from_other_architecture_or_class_count(tmp_path):
    import models
    from models.config import ModelConfig

    def tiny(k):
        return models.build_model(ModelConfig(name="spikingresformer_tiny", T=2, num_classes=k, img_size=16))

    ten = tmp_path / "tiny10.pt"
    torch.save({"model": tiny(10).state_dict()}, ten)
    rejected("checkpoint with another class count", lambda: models.load_weights(tiny(4), ten),
             models.CheckpointError, "classifier.weight")
    other = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Linear(3, 4)).state_dict()}, other)
    rejected("checkpoint from another architecture", lambda: models.load_weights(tiny(4), other),
             models.CheckpointError, "other.pt")


# ----------------------------------------------------------------------------- the entry point
class _Evil:
    """Unpickling this runs a shell command (what weights_only loading must refuse)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _entry_cases(tmp: Path) -> list[tuple[str, list[str], str, dict]]:
    """(name, command-line arguments, the file the one line must name, parts kept real)."""
    evil, trunc = tmp / "evil.pth", tmp / "trunc.pth"
    junk_st, junk_pt = tmp / "junk.safetensors", tmp / "junk.pt"
    torch.save({"model": {"w": _Evil(tmp / "pwned")}}, evil)
    torch.save({"model": {"w": torch.zeros(64, 64)}}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:300])
    junk_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    junk_pt.write_bytes(bytes(range(256)) * 4)
    real = {"model": "real"}
    missing = tmp / "no-such-data"
    data = ["data.dataset=folder", "data.num_classes=4", f"data.path={missing}"]
    return [("--transfer: code-executing pickle", ["--transfer", str(evil)], "evil.pth", {}),
            ("--transfer: truncated file", ["--transfer", str(trunc)], "trunc.pth", {}),
            ("--transfer: missing file", ["--transfer", str(tmp / "gone.pth")], "gone.pth", {}),
            ("--transfer: corrupt safetensors", ["--transfer", str(junk_st)], "junk.safetensors", {}),
            ("model.pretrained: code-executing pickle",
             ["model.name=spikingresformer_tiny", "data.input_size=[3,16,16]", f"model.pretrained={evil}"],
             "evil.pth", real),
            ("--resume: not a checkpoint", ["--resume", str(junk_pt)], "junk.pt", {}),
            ("--resume: missing file", ["--resume", str(tmp / "gone.pt")], "gone.pt", {}),
            *[(f"data.path missing ({b} loader)", [*data, f"data.backend={b}"], str(missing),
               {"loader": "real"}) for b in ("torchvision", "ffcv", "dali")]]


def test_entry_point_inputs_are_one_line(tmp_path, monkeypatch, capsys):
    """Each bad input through `dassdp-train`: status 2, the last line names the file, no traceback."""
    import launch_toy as toy
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from launch_toy import TOY_ARGS

    from launch.train import main

    for name, args, needle, kinds in _entry_cases(tmp_path):
        monkeypatch.undo()  # the previous case's stand-ins
        toy.install(monkeypatch, **kinds)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        capsys.readouterr()
        rc = main([*TOY_ARGS, "log.progress=false", "train.epochs=1", "--output-dir", str(tmp_path / "run"),
                   *args])
        err = capsys.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        clean = rc == 2 and needle in last and last.startswith("dassdp-train:") and len(last) < 1200
        clean &= not any("Traceback" in x for x in err) and not (tmp_path / "pwned").exists()
        faults_tally.hostile(f"entry point, {name}", clean)
        assert clean, f"{name}: rc {rc}: {err[-4:]}"
    monkeypatch.setenv("DASSDP_DEBUG", "1")  # the traceback on request
    assert main([*TOY_ARGS, "--output-dir", str(tmp_path / "run"), "--resume", str(tmp_path / "x.pt")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_evil_transfer_on_the_command_line(tmp_path):
    """`dassdp-train --config configs/smoke.yaml --transfer evil.pth`, verbatim: one error line, status 2."""
    import os
    import subprocess

    torch.save({"model": {"w": _Evil(tmp_path / "pwned")}}, tmp_path / "evil.pth")
    (tmp_path / "configs").symlink_to(TESTS.parent / "configs")
    data = tmp_path / "data" / "fashion-mnist-ffcv"  # converted already (the weights are read before data)
    data.mkdir(parents=True)
    (data / "manifest.json").write_text("{}")
    exe = Path(sys.executable).with_name("dassdp-train")
    done = subprocess.run([str(exe), "--config", "configs/smoke.yaml", "--transfer", "evil.pth"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [x for x in done.stderr.splitlines() if "evil.pth" in x]
    clean = done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr
    clean &= errors == done.stderr.strip().splitlines() and not (tmp_path / "pwned").exists()  # all it prints
    faults_tally.hostile("dassdp-train --config configs/smoke.yaml --transfer evil.pth", clean)
    assert clean, (done.returncode, done.stderr[-2000:])
