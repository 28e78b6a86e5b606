"""Entry point: `dassdp-train`, `python -m launch.train`, `accelerate launch -m launch.train`.

Parse, build, fit: the parts are assembled in `launch.build`, the loop lives in `launch.trainer`.
"""
from __future__ import annotations

import gc
import sys

from launch.cli import config_error_exit, parse_args
from launch.config import Config, to_yaml
from launch.errors import CheckpointLoadError, ConfigError, TrainingStopped


def run(cfg: Config) -> int:
    """Train (or evaluate with train.test_only) as configured; returns the exit status."""
    from launch.build import build_accelerator, build_trainer  # heavy imports only when training

    acc = build_accelerator(cfg)
    trainer = None
    try:
        trainer = build_trainer(cfg, acc)
        return trainer.test_only() if cfg.train.test_only else trainer.fit()
    except TrainingStopped as stop:
        print(f"dassdp-train: {stop}", file=sys.stderr)
        return stop.code
    except CheckpointLoadError as err:
        print(f"dassdp-train: {err}", file=sys.stderr)
        return 2
    finally:
        acc.end_training()
        # Free the prepared model (and with it the process group it holds) now, while the interpreter is
        # alive. Left to the collector at interpreter shutdown, gloo's worker threads could still be
        # releasing a finished collective's tensors, which needs the GIL: that thread then exits
        # mid-destructor and std::terminate aborts a run that had finished correctly.
        trainer = None
        acc.free_memory()
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    """Run one training (or evaluation) job; returns the exit status."""
    try:
        args, cfg = parse_args(argv)
    except ConfigError as err:
        return config_error_exit(err)
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    try:
        return run(cfg)
    except ConfigError as err:
        return config_error_exit(err)


if __name__ == "__main__":
    sys.exit(main())
