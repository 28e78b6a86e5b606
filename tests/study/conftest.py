"""Fixtures for dassdp-study: a tiny subset of the real Fashion-MNIST."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_helpers

from common_fixtures import fashion_mnist_subset  # noqa: E402


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """48 training and 16 test images of the real Fashion-MNIST release, as idx-ubyte.gz files."""
    return fashion_mnist_subset(tmp_path_factory.mktemp("fmnist"), 48, 16)
