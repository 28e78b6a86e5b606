"""The upstream flat config files (SpikingResformer / DA-SSDP `configs/*.yaml`): 22 keys, no sections.

`is_flat_format` recognises one, `map_flat` maps it onto the sections of `launch.config.Config`; the
same keys are the entry point's upstream flags (`--batch-size`, `--T`, ...).

A flat file reproduces the official DA-SSDP run, not only its keys (`official_run`): the official code
applies DA-SSDP always (the `code` preset here); `amp: True` is its fp16 autocast with a GradScaler (fp32 on
a CPU, where its CUDA autocast does nothing) and its firing-rate EMA under fp16 (`model.frozen_ema`); on
DVS data it never mixes frames and trains on one-hot targets, whatever `mixup` and `label_smoothing` say.
What was set so is listed in the loader's notice.
"""
from __future__ import annotations

from typing import Any

from launch.config_loader import set_dotted

# upstream key -> dotted key of the schema
FLAT_KEYS = {
    "seed": "train.seed", "epochs": "train.epochs", "batch_size": "data.batch_size", "T": "model.T",
    "model": "model.name", "dataset": "data.dataset", "augment": "data.augment", "mixup": "data.mixup",
    "cutout": "data.cutout", "label_smoothing": "data.label_smoothing", "workers": "data.workers",
    "lr": "optim.lr", "optimizer": "optim.name", "weight_decay": "optim.weight_decay",
    "input_size": "data.input_size", "TET": "train.tet", "TET_phi": "train.tet_phi",
    "TET_lambda": "train.tet_lambda", "save_latest": "train.save_latest", "test_only": "train.test_only",
    "amp": "train.amp", "sync_bn": "train.sync_bn",
}
FLAT_DATASETS = {"imagenet": "imagenet", "imagenet100": "imagenet", "cifar10": "cifar10",
                 "cifar100": "cifar100", "cifar10dvs": "cifar10dvs", "dvs128gesture": "dvs128gesture"}


def is_flat_format(data: dict, sections: set[str]) -> bool:
    """True for an upstream flat file: only its keys, none a section mapping (`model:` is a name there)."""
    return bool(data) and set(data) <= set(FLAT_KEYS) and not any(
        isinstance(data[k], dict) for k in set(data) & sections)


def map_flat(data: dict) -> dict:
    """Map an upstream flat config onto the nested schema (dict form)."""
    nested: dict[str, Any] = {}
    for k, v in data.items():
        if k == "dataset" and isinstance(v, str):
            v = FLAT_DATASETS.get(v.lower(), v)
        if k == "augment" and v in ("", False):
            v = None
        set_dotted(nested, FLAT_KEYS[k], v)
    return nested


DVS_DATASETS = ("cifar10dvs", "dvs128gesture")


def official_run(flat: dict, nested: dict) -> list[str]:
    """Set in `nested` (mapped from `flat`) what the official code does beyond its keys; returns the
    settings made, as "key=value (why)" strings for the notice."""
    made = []

    def put(key: str, value, why: str) -> None:
        set_dotted(nested, key, value)
        made.append(f"{key}={str(value).lower()} ({why})")

    put("dassdp.enabled", True, "the official code always applies DA-SSDP")
    put("dassdp.preset", "code", "the official code's rule")
    if flat.get("amp") is True:
        put("train.amp_dtype", "fp16", "amp: True is CUDA fp16 with a GradScaler; fp32 on a CPU")
        put("model.frozen_ema", True, "its firing-rate EMA under fp16")
    dataset = nested.get("data", {}).get("dataset")
    if dataset in DVS_DATASETS:
        T = nested.get("model", {}).get("T", "T")
        put("data.backend", "dvs", f"data.path: a folder from dassdp-convert {dataset} SRC OUT --T {T}")
        put("data.mixup", False, "never mixes DVS frames")
        put("data.label_smoothing", 0.0, "one-hot DVS targets")
    return made
