"""ModelConfig: which SpikingResformer to build and how (owned by `models/`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    """The network: a registered variant name plus build options."""

    name: str = "spikingresformer_ti"  # any name in models.list_models()
    T: int = 4  # time steps
    num_classes: int | None = None  # None: derived from data.dataset
    img_size: int | None = None  # None: derived from data.input_size
    in_channels: int | None = None  # None: derived from data.input_size
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    frozen_ema: bool = False  # firing-rate EMA as the official code under AMP (docs/fidelity.md)
    sparse_conv: Literal["auto"] | bool = "auto"  # event-driven CPU convs per layer (auto: if they build)
    pretrained: str | None = None  # path to weights loaded strictly before training
