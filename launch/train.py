"""Entry point: `dassdp-train`, `python -m launch.train`, `accelerate launch -m launch.train`.

Parse, build, fit: everything else lives in `launch.trainer`.
"""
from __future__ import annotations

import sys

from launch.cli import config_error_exit, parse_args
from launch.config import ConfigError, to_yaml


def main(argv: list[str] | None = None) -> int:
    """Run one training (or evaluation) job; returns the exit status."""
    try:
        args, cfg = parse_args(argv)
    except ConfigError as err:
        return config_error_exit(err)
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    from launch.trainer import run  # heavy imports only when training

    try:
        return run(cfg)
    except ConfigError as err:
        return config_error_exit(err)


if __name__ == "__main__":
    sys.exit(main())
