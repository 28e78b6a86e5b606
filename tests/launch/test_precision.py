"""`auto` precision and loader workers: the decision per CPU / CUDA capability (fake flags and devices, no
CUDA needed), the per-CPU measurement cache, the real measurement, and the worker count."""
from __future__ import annotations

import json
import math
import threading
import time

import pytest
import torch

from launch import precision

AVX2 = frozenset({"sse2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_bf16", "amx_tile"}


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """A fake CPU (set `.flags`), an empty kernel cache, and a fake measurement that counts its calls."""
    class Fake:
        flags, speedup, calls = AVX512_BF16, 1.8, 0

        def measure(self, *args, **kwargs) -> float:
            self.calls += 1
            return self.speedup

    fake = Fake()
    monkeypatch.setenv("SPIKINGRESFORMER_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_flags", lambda: fake.flags)
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda *a, **k: fake.measure(*a, **k))
    return fake


def test_native_bf16_is_avx512_bf16_or_amx(monkeypatch):
    assert not precision.cpu_has_native_bf16(AVX2)
    assert not precision.cpu_has_native_bf16(AVX2 | {"avx512f", "avx512bw"})
    assert precision.cpu_has_native_bf16(AVX512_BF16) and precision.cpu_has_native_bf16(AMX)
    monkeypatch.setattr(precision, "cpu_flags", lambda: AMX)  # no flags given: this CPU's
    assert precision.cpu_has_native_bf16()


def test_auto_on_a_cpu_without_native_bf16_is_fp32_unmeasured(cpu):
    cpu.flags = AVX2
    assert precision.resolve_amp_dtype("auto", "cpu") == ("no", "CPU AVX2 without native bf16: fp32")
    assert cpu.calls == 0


def test_auto_on_a_native_bf16_cpu_follows_the_measurement_once_per_cpu(cpu, tmp_path):
    assert precision.resolve_amp_dtype("auto", "cpu") == (
        "bf16", "CPU AVX-512 (BF16), bf16 measured 1.8x faster: bf16")
    assert precision.resolve_amp_dtype("auto", torch.device("cpu"))[0] == "bf16" and cpu.calls == 1
    (record,) = tmp_path.glob("amp-probe-*.json")
    data = json.loads(record.read_text())
    assert data["bf16_speedup"] == 1.8 and data["cpu"] == "AVX-512 (BF16)"
    assert data["torch"] == torch.__version__
    cpu.flags, cpu.speedup = AMX, 1.02  # another CPU: measured anew; bf16 no faster there
    value, reason = precision.resolve_amp_dtype("auto", "cpu")
    assert value == "no" and "1.02x" in reason and reason.endswith("fp32") and cpu.calls == 2


def test_a_new_torch_or_a_damaged_record_measures_again(cpu, tmp_path, monkeypatch):
    precision.resolve_amp_dtype("auto", "cpu")
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    precision.resolve_amp_dtype("auto", "cpu")
    assert cpu.calls == 2 and len(list(tmp_path.glob("amp-probe-*.json"))) == 2
    for record in tmp_path.glob("amp-probe-*.json"):
        record.write_text("{not json")
    cpu.speedup = 0.5
    assert precision.resolve_amp_dtype("auto", "cpu")[0] == "no" and cpu.calls == 3


def test_without_probe_a_cached_verdict_or_the_flags_decide(cpu):
    assert precision.resolve_amp_dtype("auto", "cpu", probe=False) == (
        "bf16", "CPU AVX-512 (BF16), native bf16 (not measured): bf16")
    cpu.speedup = 0.7
    precision.resolve_amp_dtype("auto", "cpu")  # measured: slower
    assert precision.resolve_amp_dtype("auto", "cpu", probe=False)[0] == "no" and cpu.calls == 1


def test_processes_asking_at_once_share_one_measurement(cpu):
    def slow(*args, **kwargs):
        cpu.calls += 1
        time.sleep(0.3)
        return 1.5

    cpu.measure = slow
    results = []
    threads = [threading.Thread(target=lambda: results.append(precision.probed_bf16_speedup()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1.5] * 3 and cpu.calls == 1


def test_explicit_choices_on_cpu(cpu):
    assert precision.resolve_amp_dtype("fp32", "cpu") == ("no", "fp32 requested: no autocast")
    value, reason = precision.resolve_amp_dtype("fp16", "cpu")  # the official code's CUDA autocast: off
    assert value == "no" and "fp32, as the official code" in reason
    assert precision.resolve_amp_dtype("bf16", "cpu") == ("bf16", "bf16 requested")
    cpu.flags = AVX2
    value, reason = precision.resolve_amp_dtype("bf16", "cpu")
    assert value == "bf16" and "AVX2 has no native bf16" in reason
    assert cpu.calls == 0
    with pytest.raises(ValueError, match="train.amp_dtype='half' is not one of auto, bf16, fp16, fp32"):
        precision.resolve_amp_dtype("half", "cpu")


@pytest.mark.parametrize("capability, expected", [((9, 0), ("bf16", "CUDA capability 9.0: bf16")),
                                                  ((8, 0), ("bf16", "CUDA capability 8.0: bf16")),
                                                  ((7, 5), ("fp16", "CUDA capability 7.5 (before Ampere): "
                                                                    "fp16 with a GradScaler"))])
def test_auto_on_cuda_follows_the_capability(monkeypatch, capability, expected):
    """No CUDA needed: the capability query (which needs it) is replaced."""
    seen = []
    monkeypatch.setattr(precision, "cuda_capability", lambda d: seen.append(d) or capability)
    assert precision.resolve_amp_dtype("auto", "cuda:1") == expected
    assert seen == [torch.device("cuda:1")]


def test_explicit_choices_on_cuda_need_no_capability(monkeypatch):
    monkeypatch.setattr(precision, "cuda_capability", lambda d: pytest.fail("capability queried"))
    assert precision.resolve_amp_dtype("fp16", "cuda") == ("fp16", "fp16 requested")
    assert precision.resolve_amp_dtype("bf16", "cuda") == ("bf16", "bf16 requested")
    assert precision.resolve_amp_dtype("fp32", "cuda")[0] == "no"


def test_the_measurement_runs_both_dtypes_and_gives_a_ratio(monkeypatch):
    steps = []
    real_autocast = torch.autocast

    def spy(device_type, dtype=None, enabled=True):
        steps.append(dtype if enabled else torch.float32)
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(precision.torch, "autocast", spy)
    rng = torch.get_rng_state()
    ratio = precision.measure_bf16_speedup(budget_s=0.0)  # warm-up + the minimum of two rounds
    assert math.isfinite(ratio) and ratio > 0
    assert steps == [torch.float32, torch.bfloat16] * 3
    assert torch.equal(torch.get_rng_state(), rng)  # a run's initialisation is not moved by the measurement


def test_workers_auto_splits_the_cores_among_the_processes(monkeypatch):
    monkeypatch.setattr(precision, "available_cores", lambda: 16)
    assert precision.resolve_workers("auto", processes_per_node=1)[0] == 16
    assert precision.resolve_workers("auto", processes_per_node=4)[0] == 4
    assert precision.resolve_workers("auto", processes_per_node=5)[0] == 3  # 16 // 5: never oversubscribed
    assert precision.resolve_workers("auto", processes_per_node=16)[0] == 1
    assert precision.resolve_workers("auto", processes_per_node=64)[0] == 1  # at least one
    monkeypatch.setattr(precision, "available_cores", lambda: 2)
    workers, reason = precision.resolve_workers("auto", processes_per_node=1)
    assert workers == 2 and reason == "data.workers=auto: 2 cores for 1 process(es) on this node: 2 each"


def test_workers_given_as_a_count(monkeypatch):
    monkeypatch.setattr(precision, "available_cores", lambda: pytest.fail("cores counted"))
    assert precision.resolve_workers(0, processes_per_node=8) == (0, "data.workers=0")
    assert precision.resolve_workers("6", processes_per_node=8)[0] == 6
    with pytest.raises(ValueError, match="data.workers=-1 is negative"):
        precision.resolve_workers(-1, processes_per_node=1)
    with pytest.raises(ValueError, match="data.workers='many' is neither a count nor auto"):
        precision.resolve_workers("many", processes_per_node=1)


def test_available_cores_obey_a_cgroup_quota(monkeypatch, tmp_path):
    assert precision._cgroup_quota(tmp_path) is None  # no cgroup files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert precision._cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert precision._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert precision._cgroup_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert precision._cgroup_quota(tmp_path) == 3.0
    monkeypatch.setattr(precision, "_cgroup_quota", lambda: 0.5)
    assert precision.available_cores() == 1
    monkeypatch.setattr(precision, "_cgroup_quota", lambda: None)
    assert precision.available_cores() >= 1


def test_the_run_precision_adds_amp_off_and_fp32_evaluation(cpu):
    cpu.flags = AVX2
    precision.resolve_precision.cache_clear()  # resolved once per process: this fake CPU is a new one
    p = precision.resolve_precision(False, "bf16", True, "cpu")
    assert (p.train, p.label, p.eval) == ("no", "fp32", "fp32") and "train.amp=false" in p.reason
    p = precision.resolve_precision(True, "bf16", False, "cpu")
    assert (p.train, p.eval) == ("bf16", "fp32")  # evaluation in fp32 unless train.eval_amp
    p = precision.resolve_precision(True, "bf16", True, "cpu")
    assert p.eval == "bf16" and p.record() == {"train": "bf16", "reason": p.reason, "eval": "bf16"}
    assert p.line().startswith("precision: train bf16 (") and p.line().endswith("; eval bf16")
