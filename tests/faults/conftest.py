"""Fault-injection suite: shared fork runner, accelerate reset and the end-of-session summary line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "launch"))  # reuse the trainer tests' stand-in parts (launch_toy)
sys.path.insert(0, str(HERE.parent / "convert"))  # and the converter tests' data makers

import faults_tally  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors and forked children: one intra-op thread (no OpenMP pool to inherit across fork)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """accelerate keeps process-wide singletons: reset them around every in-process run."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    torch.set_grad_enabled(True)


def pytest_terminal_summary(terminalreporter):
    """Print what the fault tests injected and how much of it survived."""
    if faults_tally.COUNTS["injected"] or faults_tally.COUNTS["tried"]:
        terminalreporter.write_sep("-", "fault-injection summary")
        for entry in faults_tally.LOG:
            terminalreporter.write_line(entry)
        terminalreporter.write_line(faults_tally.line())
