"""dassdp-bench: the harness (interleaving, ratios, memory), the photo data, the CLI and its JSON shape."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tools.bench import cli, report
from tools.bench.harness import Bench, PeakMemory
from tools.bench.photos import build_tree


def test_compare_interleaves_warms_up_and_reports_ratios():
    calls = []
    cost = {"a": 2.0, "b": 1.0}

    def make(name):
        def run():
            calls.append(name)
            return cost[name] * 1000  # items
        return run

    bench = Bench("unit")
    samples = bench.compare({"a": make("a"), "b": make("b")}, metric="items_per_s", unit="items/s",
                            warmup=2, repeats=3, baseline="b")
    assert calls == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-up, then A B | B A | A B
    assert [r["case"] for r in bench.results] == ["a", "b"]
    rec = bench.results[0]
    assert rec["repeats"] == 3 and rec["min"] <= rec["median"] <= rec["max"]
    assert rec["samples"] == samples["a"]
    (ratio,) = bench.ratios
    assert (ratio["a"], ratio["b"], ratio["metric"]) == ("a", "b", "items_per_s")
    per_round = sorted(x / y for x, y in zip(samples["a"], samples["b"]))
    assert ratio["median"] == pytest.approx(per_round[1])


def test_peak_memory_sees_a_temporary_tensor():
    with PeakMemory("cpu") as pm:
        x = torch.ones(10 * 2**20 // 4)  # 10 MiB
        y = x * 2
        del x, y
    assert 19.5 <= pm.mib <= 25
    with PeakMemory("cpu") as small:
        torch.ones(16)
    assert small.mib < 0.1


def test_photo_tree_is_real_jpegs_at_imagenet_size_and_cached(tmp_path):
    root = build_tree(tmp_path / "photos", 24, 10, seed=1)
    files = sorted((root / "train").rglob("*.jpg"))
    assert len(files) == 24 and len(list((root / "val").rglob("*.jpg"))) == 10
    assert len({f.parent.name for f in files}) == 10  # one class per source photo
    for f in files[:6]:
        img = Image.open(f)
        assert img.format == "JPEG" and img.mode == "RGB" and img.size in ((500, 375), (375, 500))
    mtime = files[0].stat().st_mtime_ns
    build_tree(tmp_path / "photos", 24, 10, seed=1)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten


def test_set_overrides_are_typed_and_unknown_keys_rejected():
    s = cli.settings_for("loaders", True, ["images=100", "cases=torchvision,ffcv"])
    assert s["images"] == 100 and s["cases"] == ["torchvision", "ffcv"]
    with pytest.raises(SystemExit, match="not a setting of mode loaders"):
        cli.settings_for("loaders", True, ["imagez=100"])
    with pytest.raises(SystemExit, match="images=lots"):
        cli.settings_for("loaders", True, ["images=lots"])


def test_validate_rejects_a_record_without_its_keys():
    doc = {"schema": 1, "environment": {}, "settings": {}, "ratios": [],
           "results": [{"mode": "m", "case": "c", "metric": "x", "unit": "u", "min": 1, "median": 1}]}
    with pytest.raises(ValueError, match="max"):
        report.validate(doc)


def _check_shape(doc: dict, mode: str) -> None:
    report.validate(doc)
    env = doc["environment"]
    assert env["hardware"]["usable_cores"] >= 1
    assert env["versions"]["torch"] == torch.__version__  # with the build tag (+cpu, +cu130): it matters
    assert env["hardware"]["vector_isa"]  # bf16 speed depends on it
    assert "commit" in env["git"] and env["threads"]["torch_intra_op"] >= 1
    assert mode in doc["settings"]
    for r in doc["results"]:
        assert r["mode"] == mode and r["min"] <= r["median"] <= r["max"]


def test_cli_loaders_writes_json_and_charts(tmp_path):
    out = tmp_path / "out" / "loaders.json"
    rc = cli.main(["loaders", "--quick", "--json", str(out), "--cache", str(tmp_path / "cache"),
                   "--set", "images=128", "--set", "val_images=10", "--set", "repeats=2", "--set", "warmup=1",
                   "--set", "cases=torchvision"])
    assert rc == 0
    doc = json.loads(out.read_text())
    _check_shape(doc, "loaders")
    (rec,) = doc["results"]
    assert rec["case"] == "torchvision" and rec["unit"] == "images/s" and rec["repeats"] == 2
    assert doc["settings"]["loaders"]["images"] == 128
    assert doc["charts"] and all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in doc["charts"])


def test_cli_dassdp_dw_matches_naive_and_uses_less_memory(tmp_path):
    out = tmp_path / "dassdp.json"
    cli.main(["dassdp", "--quick", "--json", str(out), "--no-charts", "--set", "parts=dw",
              "--set", "dw_shapes=200x300", "--set", "dw_repeats=2"])
    doc = json.loads(out.read_text())
    _check_shape(doc, "dassdp")
    mem = {r["case"]: r["median"] for r in doc["results"] if r["metric"] == "dw_peak_memory"}
    assert mem["dw_ours"] < mem["dw_naive"] / 5  # the naive form holds several [B, C_out, C_in] tensors
    (ratio,) = doc["ratios"]
    assert (ratio["a"], ratio["b"]) == ("dw_ours", "dw_naive")
    (err,) = [r for r in doc["results"] if r["metric"] == "dw_max_abs_error"]
    assert err["max"] < 1e-6


def test_cli_model_and_dassdp_hook_on_the_tiny_variant(tmp_path):
    out = tmp_path / "model.json"
    cli.main(["model", "--json", str(out), "--no-charts", "--threads", "1",
              "--set", "configs=spikingresformer_tiny:16:2:2:fp32", "--set", "official=false",
              "--set", "compile=false", "--set", "repeats=1", "--set", "warmup=0",
              "--set", "neuron_shapes=2x2x4x4x4"])
    doc = json.loads(out.read_text())
    _check_shape(doc, "model")
    metrics = {(r["case"], r["metric"]) for r in doc["results"]}
    assert {("eager", "train_images_per_s"), ("eager", "forward_images_per_s"),
            ("eager", "train_peak_memory"), ("lif_kernel", "neuron_updates_per_s"),
            ("lif_stepwise", "neuron_updates_per_s")} <= metrics
    out = tmp_path / "hook.json"
    cli.main(["dassdp", "--json", str(out), "--no-charts", "--threads", "1", "--set", "parts=hook",
              "--set", "model=spikingresformer_tiny", "--set", "img_size=16", "--set", "batch_size=2",
              "--set", "repeats=2", "--set", "warmup=1"])
    doc = json.loads(out.read_text())
    _check_shape(doc, "dassdp")
    cases = {r["case"] for r in doc["results"] if r["metric"] == "train_step_time"}
    assert cases == {"dassdp_on", "dassdp_off"}
    (ratio,) = [r for r in doc["ratios"] if r["metric"] == "train_step_time"]
    assert (ratio["a"], ratio["b"]) == ("dassdp_on", "dassdp_off") and ratio["median"] > 0
    (hook_time,) = [r for r in doc["results"] if r["metric"] == "after_optimizer_step_time"]
    (own,) = [r for r in doc["results"] if r["metric"] == "hook_own_time"]
    assert hook_time["repeats"] == own["repeats"] == 2 and 0 < hook_time["min"]
    assert all(o > a for o, a in zip(own["samples"], hook_time["samples"]))  # + the observers' recording


def test_cli_dassdp_hook_alone_records_each_site(tmp_path):
    out = tmp_path / "alone.json"
    cli.main(["dassdp", "--json", str(out), "--no-charts", "--threads", "1", "--set", "parts=alone",
              "--set", "model=spikingresformer_tiny", "--set", "img_size=16", "--set", "batch_size=2",
              "--set", "alone_repeats=2"])
    doc = json.loads(out.read_text())
    _check_shape(doc, "dassdp")
    (rec,) = doc["results"]
    assert rec["case"] == "dassdp_hook_alone" and rec["repeats"] == 2 and rec["min"] > 0
    shapes = rec["site_shapes"]  # "side:(T, B, ...)" with the asked batch
    assert any(s.startswith("pre:") for s in shapes) and all(", 2," in s for s in shapes)


MODEL_ARGS = ["model", "--no-charts", "--threads", "1", "--set", "configs=spikingresformer_tiny:16:2:2:fp32",
              "--set", "compile=false", "--set", "forward=false", "--set", "repeats=1", "--set", "warmup=0",
              "--set", "neuron_shapes=", "--set", "official=true"]


def test_official_code_absent_is_one_line_naming_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DASSDP_OFFICIAL", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main([*MODEL_ARGS, "--json", str(tmp_path / "m.json")])
    msg = str(e.value.code)
    assert "\n" not in msg and "--official PATH" in msg and "DASSDP_OFFICIAL" in msg
    assert "official_shim.py" in msg and "docs/benchmarks.md" in msg
    monkeypatch.setenv("DASSDP_OFFICIAL", str(tmp_path))  # a folder without the shim
    with pytest.raises(SystemExit, match=f"{tmp_path / 'official_shim.py'} does not exist"):
        cli.main([*MODEL_ARGS, "--json", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()  # refused before anything ran


SHIM = """
import torch


class Tiny(torch.nn.Module):  # stands in for the official model: [B, 3, H, W] -> [T, B, K]
    def __init__(self, T, num_classes):
        super().__init__()
        self.T, self.fc = T, torch.nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3))).unsqueeze(0).expand(self.T, -1, -1)


def build_official(variant, T, img_size, num_classes):
    if variant != "spikingresformer_tiny":
        raise KeyError(variant)
    return Tiny(T, num_classes)
"""


def test_official_worker_runs_the_shim_from_official_path(tmp_path, monkeypatch):
    monkeypatch.delenv("DASSDP_OFFICIAL", raising=False)
    official = tmp_path / "official"
    official.mkdir()
    (official / "official_shim.py").write_text(SHIM)
    out = tmp_path / "m.json"
    cli.main([*MODEL_ARGS, "--json", str(out), "--official", str(official)])
    doc = json.loads(out.read_text())
    _check_shape(doc, "model")
    cases = {r["case"] for r in doc["results"] if r["metric"] == "train_images_per_s"}
    assert cases == {"eager", "official"}
    (ratio,) = [r for r in doc["ratios"] if r["metric"] == "train_images_per_s"]
    assert (ratio["a"], ratio["b"]) == ("eager", "official") and ratio["median"] > 0
    assert any(str(official) in n and "spikingjelly" in n for n in doc["notes"])


def test_model_mode_times_the_default_model_and_dense_on_request():
    """`ours` is the model as the trainer builds it by default (event-driven convolutions per layer where
    the kernels build); `compare_dense` adds the all-dense model."""
    from models.layers import Conv2d
    from models.spike_conv import unavailable_reason
    from tools.bench import mode_model

    s = {**mode_model.QUICK, "compile": False, "compare_dense": True}
    c = mode_model.parse_config("spikingresformer_tiny:16:2:2:fp32")
    st = mode_model.steppers(c, s, torch.device("cpu"))
    assert set(st) == {"eager", "eager_dense"}

    def event_driven(stepper):
        return [n for n, m in stepper.model.named_modules() if isinstance(m, Conv2d) and m.sparse_limits]
    assert event_driven(st["eager_dense"]) == []
    assert bool(event_driven(st["eager"])) == (unavailable_reason() is None)  # the wide ones, per layer
    with pytest.raises(SystemExit, match="auto, true or false"):
        mode_model.model_sparse_conv("sometimes")
