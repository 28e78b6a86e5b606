"""Where a run stands: the plain record the trainer advances and the checkpointer saves and restores."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TrainProgress:
    """Position and counters of one run (the same on every rank)."""

    epoch: int = 0  # the epoch to run (or running)
    batch: int = 0  # micro-batches of `epoch` already consumed (this process)
    step: int = 0  # optimizer steps that really happened
    samples: int = 0  # training samples consumed, all processes together
    best_acc1: float = 0.0  # best validation top-1 so far
    skipped_nonfinite: int = 0  # micro-batches skipped for a NaN/inf loss (train.nonfinite=skip)
    skipped_overflow: int = 0  # optimizer steps skipped by AMP loss scaling

    def as_dict(self) -> dict:
        """The fields by name (the checkpoint's top-level keys)."""
        return dataclasses.asdict(self)

    def load(self, sd: dict) -> None:
        """Take the fields a checkpoint has; counters absent from older files stay at 0."""
        for f in dataclasses.fields(self):
            if f.name in sd:
                setattr(self, f.name, type(getattr(self, f.name))(sd[f.name]))
