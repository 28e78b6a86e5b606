"""Command line: `--config FILE` + dotted overrides + the upstream SpikingResformer/DA-SSDP flags."""
from __future__ import annotations

import argparse
import sys

from launch.config import Config, load_config
from launch.errors import ConfigError, one_line
from launch.flat_config import FLAT_KEYS

# The original flags, as overrides of the schema (an explicit dotted override still wins: it comes last).
PATH_FLAGS = {"data_path": "data.path", "output_dir": "train.output_dir", "resume": "train.resume",
              "transfer": "train.transfer"}


def build_parser() -> argparse.ArgumentParser:
    """The `dassdp-train` argument parser."""
    p = argparse.ArgumentParser(
        prog="dassdp-train", description="Train SpikingResformer (optionally with DA-SSDP).",
        epilog="Overrides: section.key=value, e.g. optim.lr=1e-3 dassdp.enabled=false")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="YAML config (sectioned or the upstream flat format)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    p.add_argument("--data-path", help="data.path")
    p.add_argument("--output-dir", help="train.output_dir")
    p.add_argument("--resume", metavar="PATH|auto", help="continue from a checkpoint (auto: the run's last)")
    p.add_argument("--transfer", metavar="CKPT", help="fine-tune from a checkpoint, classifier dropped")
    p.add_argument("--test-only", action="store_true", help="evaluate and print the SOP/energy table")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--debug", action="store_true",
                   help="also print the traceback of an input error (or set DASSDP_DEBUG=1)")
    flat = p.add_argument_group("upstream flags (same meaning as the upstream flat config keys)")
    for key, dotted in FLAT_KEYS.items():
        if key in ("test_only",):
            continue
        flag = "--" + key.replace("_", "-")
        flat.add_argument(flag, dest="flat_" + key, metavar="V", help=dotted)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """Parse the command line into (args, resolved Config); ConfigError on any bad key or value."""
    args = build_parser().parse_intermixed_args(argv)  # overrides may come before or after flags
    overrides: list[str] = []
    for key, dotted in FLAT_KEYS.items():
        value = getattr(args, "flat_" + key, None)
        if value is not None:
            overrides.append(f"{dotted}={value}")
    for attr, dotted in PATH_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            overrides.append(f"{dotted}={_quote(value)}")
    if args.test_only:
        overrides.append("train.test_only=true")
    overrides.extend(args.overrides)
    notice = (lambda msg: print(msg, file=sys.stderr))
    cfg = load_config(args.config, overrides, notice=notice)
    return args, cfg


def _quote(path: str) -> str:
    """A path as a YAML string scalar (so `auto`, `123` or `true` stay strings)."""
    return "'" + path.replace("'", "''") + "'"


def config_error_exit(err: ConfigError) -> int:
    """Print a config error as one line and return the exit status."""
    print(f"dassdp-train: config error: {one_line(err)}", file=sys.stderr)
    return 2
