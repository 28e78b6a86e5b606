"""The training loop on CPU with stand-in parts: outputs, exact resume, hooks on real steps, faults."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from launch.checkpoint import CheckpointLoadError, load_checkpoint


def weights(out, name="last"):
    return load_file(str(out / "checkpoints" / f"{name}.safetensors"))


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_writes_every_output(tmp_path, toy_train):
    out = tmp_path / "run"
    assert toy_train(out, "train.epochs=2", "dassdp.enabled=true") == 0
    for rel in ["config.yaml", "run.json", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt",
                "checkpoints/last.safetensors", "checkpoints/best.safetensors", "metrics/steps.csv",
                "metrics/steps.jsonl", "metrics/epochs.csv", "metrics/epochs.jsonl"]:
        assert (out / rel).is_file(), rel
    assert list((out / "tb").glob("events.out.tfevents.*"))
    steps = [json.loads(x) for x in (out / "metrics/steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(2, 17, 2))
    assert {"loss", "lr", "img_per_s", "data_wait", "toy/dw_abs"} <= set(steps[-1])
    epochs = [json.loads(x) for x in (out / "metrics/epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1] and "val_top1" in epochs[0]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    ck = load_checkpoint(out / "checkpoints/best.pt")  # weights_only
    assert ck["best_acc1"] == max(e["val_top1"] for e in epochs)  # the CURRENT best, not the previous
    assert ck["hooks"]["toy"]["calls"] == ck["step"]
    run = json.loads((out / "run.json").read_text())
    assert run["git"] and run["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("accum", [1, 3])
def test_resume_mid_epoch_is_bit_exact(tmp_path, toy_train, accum):
    common = ["train.epochs=2", "dassdp.enabled=true", f"train.grad_accum={accum}"]
    assert toy_train(tmp_path / "a", *common) == 0
    b = tmp_path / "b"
    stop = 3 if accum == 1 else 2  # epoch 0 has ceil(8 / accum) steps: stop inside it
    assert toy_train(b, *common, f"train.stop_after_steps={stop}") == 0
    mid = load_checkpoint(b / "checkpoints/last.pt")
    assert (mid["epoch"], mid["step"], mid["batch"]) == (0, stop, stop * accum)
    assert toy_train(b, *common, "--resume", "auto") == 0
    assert_same(weights(tmp_path / "a"), weights(b))
    ca, cb = load_checkpoint(tmp_path / "a/checkpoints/last.pt"), load_checkpoint(b / "checkpoints/last.pt")
    assert ca["step"] == cb["step"] == 2 * -(-8 // accum)
    assert torch.equal(ca["hooks"]["toy"]["calls"], cb["hooks"]["toy"]["calls"])
    assert ca["optimizer"]["param_groups"][0]["lr"] == cb["optimizer"]["param_groups"][0]["lr"]


def test_hooks_only_after_real_steps(tmp_path, toy_train, monkeypatch):
    from accelerate.optimizer import AcceleratedOptimizer

    calls = {"n": 0}

    def skipped(self):  # every third optimizer step is an AMP-overflow skip
        calls["n"] += 1
        return calls["n"] % 3 == 0

    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(skipped))
    out = tmp_path / "r"
    assert toy_train(out, "train.epochs=1", "dassdp.enabled=true", "train.grad_accum=2") == 0
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert calls["n"] == 4 and ck["step"] == 3 and int(ck["hooks"]["toy"]["calls"]) == 3
    assert json.loads((out / "summary.json").read_text())["skipped_overflow"] == 1


def test_nonfinite_loss_stops_and_keeps_last_good(tmp_path, toy_train, monkeypatch, capsys):
    from launch import parts

    out = tmp_path / "r"
    assert toy_train(out, "train.epochs=1") == 0
    good = weights(out)
    orig, calls = parts.Criterion.forward, {"n": 0}

    def poisoned(self, out_, target):  # the 6th loss of the resumed run is NaN (optimizer step 8 + 5)
        calls["n"] += 1
        loss = orig(self, out_, target)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(parts.Criterion, "forward", poisoned)
    assert toy_train(out, "train.epochs=2", "--resume", "auto") == 3
    err = capsys.readouterr().err
    assert "non-finite loss at optimizer step 13" in err and "last.pt" in err
    assert_same(good, weights(out))  # the last good checkpoint is untouched
    calls["n"] = 0
    assert toy_train(tmp_path / "s", "train.epochs=1", "train.nonfinite=skip") == 0
    summary = json.loads((tmp_path / "s/summary.json").read_text())
    assert summary["skipped_nonfinite"] == 1 and summary["steps"] == 7
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "s").values())


def test_loader_crash_ends_cleanly_and_resumes_exactly(tmp_path, toy_train, capsys):
    assert toy_train(tmp_path / "a", "train.epochs=2") == 0
    b = tmp_path / "b"
    assert toy_train(b, "train.epochs=2", fail_at=(1, 3)) == 5
    err = capsys.readouterr().err
    assert "data loader failed in epoch 1 at batch 3" in err and "exited unexpectedly" in err
    assert load_checkpoint(b / "checkpoints/last.pt")["batch"] == 3
    assert toy_train(b, "train.epochs=2", "--resume", "auto") == 0
    assert_same(weights(tmp_path / "a"), weights(b))


def test_checkpoint_loading_runs_no_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointLoadError, match="cannot be read safely"):
        load_checkpoint(bad)
    trunc = tmp_path / "t.pt"
    torch.save({"model": {"w": torch.ones(1000)}}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:500])
    with pytest.raises(CheckpointLoadError, match=str(trunc)):
        load_checkpoint(trunc)


def test_resume_path_errors(tmp_path, toy_train, capsys):
    assert toy_train(tmp_path / "r", "train.epochs=1", "--resume", str(tmp_path / "nope.pt")) == 2
    assert "no such file" in capsys.readouterr().err


def test_real_model_and_dassdp_resume_bit_exact(tmp_path, toy_train):
    """spikingresformer_tiny + DASSDPHook (gate fitted after 3 steps): stop mid-epoch, resume == straight."""
    from launch_toy import REAL_ARGS

    common = [*REAL_ARGS, "train.epochs=2", "dassdp.enabled=true", "data.input_size=[3,16,16]"]
    real = dict(model="real", hook="real", n=48)
    assert toy_train(tmp_path / "a", *common, **real) == 0
    assert toy_train(tmp_path / "b", *common, "train.stop_after_steps=4", **real) == 0
    assert toy_train(tmp_path / "b", *common, "--resume", "auto", **real) == 0
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    ck = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    hook = ck["hooks"]["dassdp"]
    assert hook["fitted"] and hook["applied_steps"] == ck["step"] - 3 == 9
    steps = [json.loads(x) for x in (tmp_path / "a/metrics/steps.jsonl").read_text().splitlines()]
    assert any("dassdp/classifier/sync" in r for r in steps)


def test_bf16_autocast_on_cpu(tmp_path, toy_train):
    out = tmp_path / "r"
    rc = toy_train(out, "train.epochs=1", "train.amp=true", "train.amp_dtype=bf16", "dassdp.enabled=true")
    assert rc == 0
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert ck["step"] == 8 and ck["scaler"] is None  # bf16 needs no loss scaling
    assert all(v.dtype == torch.float32 for v in weights(out).values() if v.is_floating_point())


def test_compiled_model_trains_hooks_act_and_checkpoints_keep_plain_names(tmp_path, toy_train, monkeypatch):
    """model.compile=true: same checkpoint names as eager (no `_orig_mod.`), hooks run on every step."""
    import models

    compiled_calls, real_compile = [], models.compile_model

    def counting_compile(model, **kw):
        compiled_calls.append(model)
        return real_compile(model, **kw)

    monkeypatch.setattr(models, "compile_model", counting_compile)
    assert toy_train(tmp_path / "c", "train.epochs=1", "model.compile=true", "dassdp.enabled=true") == 0
    assert len(compiled_calls) == 1
    assert toy_train(tmp_path / "e", "train.epochs=1", "dassdp.enabled=true") == 0
    compiled, eager = weights(tmp_path / "c"), weights(tmp_path / "e")
    assert compiled.keys() == eager.keys() and not any("_orig_mod" in k for k in compiled)
    ck = load_checkpoint(tmp_path / "c/checkpoints/last.pt")
    assert ck["step"] == 8 and ck["hooks"]["toy"]["calls"] == 8
    assert not any("_orig_mod" in k for k in ck["model"])
