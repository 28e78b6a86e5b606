"""Fault-injection suite: shared fork runner, accelerate reset and the end-of-session summary line."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "launch"))  # reuse the trainer tests' stand-in parts (launch_toy)
sys.path.insert(0, str(HERE.parent / "convert"))  # and the converter tests' data makers

import faults_tally  # noqa: E402
from common_fixtures import fresh_accelerate, one_thread  # noqa: E402,F401 (autouse fixtures)


def pytest_terminal_summary(terminalreporter):
    """Print what the fault tests injected and how much of it survived."""
    if faults_tally.COUNTS["injected"] or faults_tally.COUNTS["tried"]:
        terminalreporter.write_sep("-", "fault-injection summary")
        for entry in faults_tally.LOG:
            terminalreporter.write_line(entry)
        terminalreporter.write_line(faults_tally.line())
