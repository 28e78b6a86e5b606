"""The C kernels built for older instruction sets than this machine's: AVX2 (x86-64-v3) and SSE2 (x86-64).

Each level runs the existing correctness checks in a child process whose kernels are built for it
(`DASSDP_KERNEL_ARCH`) and whose torch and oneDNN are held to the same level, as on such a CPU: the LIF
kernel bit-identical to spikingjelly (fp32, bf16, fp16), the event-driven convolution equal to the dense
one. The libraries it built are then disassembled to show that they hold no wider instruction (an
AVX-512 instruction left in an "AVX2" build would crash on an AVX2 CPU).
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models import cbuild, lif_cpu, spike_conv

ROOT = Path(__file__).resolve().parents[2]
AVX512 = re.compile(r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")  # registers only AVX-512 has
AVX = re.compile(r"%ymm|^\s*[0-9a-f]+:\s+v[a-z]")  # 256-bit registers, VEX-encoded (v...) instructions
# (kernel level, torch's dispatch level, oneDNN's ceiling, what the build must not contain)
LEVELS = {"x86-64-v3": ("avx2", "AVX2", [AVX512]), "x86-64": ("default", "SSE41", [AVX512, AVX])}
CHECKS = ["tests/models/test_model.py::test_cpu_lif_kernel_is_bit_identical_to_spikingjelly",
          "tests/models/test_model.py::test_lif_in_two_chunks_equals_one_call",
          "tests/models/test_model.py::test_lif_without_keeping_the_final_membrane_gives_the_same_spikes_and_gradient",
          "tests/models/test_model.py::test_cpu_lif_kernel_empty_input",
          "tests/models/test_spike_conv.py::test_forward_and_weight_gradient_equal_dense_convolution",
          "tests/models/test_spike_conv.py::test_autograd_gives_the_dense_gradients_for_input_and_weight",
          "tests/models/test_spike_conv.py::test_all_zero_input_and_nonzero_sign_patterns"]

x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 -march levels")


def _disassembly(path: Path) -> str:
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils, which gcc needs) is missing"
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout


def _offending(text: str, pattern: re.Pattern) -> list[str]:
    return [line for line in text.splitlines() if pattern.search(line)][:3]


def test_arch_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(cbuild.ARCH_ENV, raising=False)
    assert cbuild.kernel_arch() == "native"
    monkeypatch.setenv(cbuild.ARCH_ENV, "x86-64-v3")
    assert cbuild.kernel_arch() == "x86-64-v3" and cbuild.kernel_arch("x86-64") == "x86-64"
    k = cbuild.Kernels(spike_conv._kernels.source, ["-DX"], spike_conv._declare)
    assert "-march=x86-64-v3" in k.flags() and k.flags()[-1] == "-DX"
    monkeypatch.setenv(cbuild.ARCH_ENV, "native -fno-such")
    with pytest.raises(ValueError, match="DASSDP_KERNEL_ARCH='native -fno-such' is not a -march level"):
        cbuild.kernel_arch()


def test_a_bad_arch_makes_the_kernels_unavailable_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKINGRESFORMER_CACHE", str(tmp_path))
    k = cbuild.Kernels(lif_cpu._kernels.source, lif_cpu._FLAGS, lif_cpu._declare, arch="no-such-cpu")
    assert k.library() is None and "-march=no-such-cpu failed on" in k.unavailable_reason()


@x86_only
def test_the_disassembly_check_sees_avx512_in_a_native_build(monkeypatch, tmp_path):
    """The pattern the older levels are checked with finds what it looks for (on an AVX-512 host)."""
    if "avx512bw" not in cbuild.cpu_flags():
        pytest.skip("this CPU has no AVX-512BW: the native build holds none")
    monkeypatch.setenv("SPIKINGRESFORMER_CACHE", str(tmp_path))
    native = cbuild.Kernels(spike_conv._kernels.source, [], spike_conv._declare, arch="native")
    assert native.library() is not None, native.unavailable_reason()
    assert _offending(_disassembly(native.path), AVX512)


@x86_only
@pytest.mark.parametrize("arch", LEVELS)
def test_existing_checks_pass_on_kernels_built_for(arch, tmp_path):
    aten, onednn, forbidden = LEVELS[arch]
    env = {**os.environ, cbuild.ARCH_ENV: arch, "SPIKINGRESFORMER_CACHE": str(tmp_path),
           "ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CHECKS],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", r.stdout) and "skipped" not in r.stdout, r.stdout[-2000:]
    for stem in ("lif_cpu", "spike_conv"):
        (built,) = tmp_path.glob(f"{stem}-*.so")  # the only build in this cache: the one the checks ran
        text = _disassembly(built)
        assert "mul" in text or "add" in text  # a real disassembly, not an empty one
        for pattern in forbidden:
            assert not _offending(text, pattern), (arch, stem, _offending(text, pattern))
