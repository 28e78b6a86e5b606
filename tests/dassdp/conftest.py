"""Make `import dassdp` find the package, not this folder; run these tiny-tensor tests on one thread.

pytest's default (prepend) import mode puts tests/ on sys.path; with the editable install's finder coming
after the path finder, `import dassdp` then resolves to tests/dassdp as an empty namespace package.
A repository-wide fix is `pythonpath = ["."]` in [tool.pytest.ini_options] (asked of the coordinator).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_mod = sys.modules.get("dassdp")
if _mod is not None and getattr(_mod, "__file__", None) is None:  # a namespace stand-in: import the real one
    del sys.modules["dassdp"]
import dassdp  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny tensors: one intra-op thread is faster on the shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
