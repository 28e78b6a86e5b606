"""Shared fixtures: the project root, the real recordings in tests/data, and the --runslow switch."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"  # small real recordings kept in the repo (see its README.md)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run the long variants too")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords or "long_faults" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """tests/data: the small real recordings (origin and licence in tests/data/README.md)."""
    return TEST_DATA
