"""A checkpoint written by the trainer before its core was split into parts still resumes exactly."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from launch.checkpoint import load_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_pre_core"
sys.path.insert(0, str(FIXTURE))

from make_fixture import STEM_STATS, weights_sha256  # noqa: E402


def test_old_checkpoint_resumes_to_the_same_weights(tmp_path, toy_train, capsys):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "last.pt", out / "checkpoints" / "last.pt")
    old = load_checkpoint(FIXTURE / "last.pt")
    # the old code had dense convolutions only: its weights are reproduced with them
    rc = toy_train(out, *expected["args"], "model.sparse_conv=false", "--resume", "auto", model="real",
                   hook="real", n=expected["n_samples"])
    assert rc == 0
    said = capsys.readouterr()
    assert f"epoch {old['epoch']}, batch {old['batch']}, step {old['step']}" in said.out  # position restored
    assert (old["epoch"], old["batch"], old["step"]) == (1, 1, 5)
    new = load_checkpoint(out / "checkpoints" / "last.pt")
    assert new["step"] == 8 and new["epoch"] == 2
    hook_old, hook_new = old["hooks"]["dassdp"], new["hooks"]["dassdp"]
    assert hook_old["fitted"] and hook_new["applied_steps"] == hook_old["applied_steps"] + 3 == 5
    for site, gate in hook_old["gate"].items():  # the gate fitted before the stop is the one applied after
        assert torch.equal(gate, hook_new["gate"][site]), site
    final = out / "checkpoints" / "last.safetensors"
    assert weights_sha256(final, STEM_STATS) == expected["final_weights_sha256_without_stem_stats"]
    weights = load_file(str(final))
    for k, v in expected["final_stem_stats"].items():  # since b093639: equal up to rounding
        torch.testing.assert_close(weights[k], torch.tensor(v), rtol=1e-5, atol=1e-8, msg=k)
