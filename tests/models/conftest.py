"""Make `import models` find the package, not this folder (tests/ is on sys.path in prepend mode).

A repository-wide fix is `pythonpath = ["."]` in [tool.pytest.ini_options] (asked of the coordinator).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_mod = sys.modules.get("models")
if _mod is not None and getattr(_mod, "__file__", None) is None:  # a namespace stand-in
    del sys.modules["models"]
import models  # noqa: E402,F401
