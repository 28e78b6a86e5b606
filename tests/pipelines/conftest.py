"""Session data for the pipelines tests: real-photo JPEGs and CIFAR pickles, converted by dassdp-convert."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pl_fixtures, pl_helpers
import pl_fixtures as fixtures  # noqa: E402
from pl_helpers import CLASSES, N_TRAIN, N_VAL  # noqa: E402


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipelines")


@pytest.fixture(scope="session")
def jpeg_tree(data_root) -> Path:
    """Class folders of real-photo 500x375 JPEGs: train 32, val 12, 3 classes."""
    return fixtures.write_folder(data_root / "src", {"train": N_TRAIN, "val": N_VAL}, classes=CLASSES)


@pytest.fixture(scope="session")
def converted(data_root, jpeg_tree) -> dict[str, Path]:
    """The same tree converted by the real converter to both formats."""
    from tools.convert.api import convert

    out = {}
    for fmt in ("ffcv", "dali"):
        out[fmt] = data_root / fmt
        convert("imagenet", jpeg_tree, out[fmt], fmt, progress=False, workers=1)
    return out


@pytest.fixture(scope="session")
def cifar(data_root) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """CIFAR-10 pickles (50 train, 20 test) and their dassdp-convert DALI output."""
    from tools.convert.api import convert

    src = data_root / "cifar"
    xs, ys = fixtures.write_cifar10(src, 50, 20)
    out = data_root / "cifar_dali"
    convert("cifar10", src, out, "dali", progress=False, workers=1)
    convert("cifar10", src, data_root / "cifar_ffcv", "ffcv", progress=False, workers=1)
    return src, out, xs, ys
