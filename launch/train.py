"""Entry point: `dassdp-train`, `python -m launch.train`, `accelerate launch -m launch.train`.

Parse, build, fit: the parts are assembled in `launch.build`, the loop lives in `launch.trainer`. Around
them: the output folder's lock (`launch.runlock`), the stop signals and time limit (`launch.preempt`),
and the exit statuses of `launch.errors`: every error bad input can cause is one line, status 2
(`--debug` or DASSDP_DEBUG=1 also prints the traceback).
"""
from __future__ import annotations

import gc
import os
import sys
import traceback

from launch.cli import config_error_exit, parse_args
from launch.config import Config, to_yaml
from launch.errors import (
    EXIT_BAD_INPUT,
    EXIT_PREEMPTED,
    CheckpointLoadError,
    ConfigError,
    FolderInUse,
    TrainingStopped,
    one_line,
)
from launch.preempt import StopRequest, record_exit


def input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions bad input raises (files named in their message): one line and status 2."""
    from models import CheckpointError
    from pipelines import DataError

    return (CheckpointLoadError, FolderInUse, CheckpointError, DataError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError)


def run(cfg: Config) -> int:
    """Train (or evaluate with train.test_only) as configured; returns the exit status."""
    from launch.build import build_accelerator, build_trainer  # heavy imports only when training
    from launch.runlock import lock_output

    stop = StopRequest(cfg.train.time_limit).install()  # from the start: a signal during the build is kept
    acc, trainer, lock = None, None, None
    try:
        acc = build_accelerator(cfg)
        stop.join(acc)
        lock = None if cfg.train.test_only else lock_output(cfg.train.output_dir, acc)
        trainer = build_trainer(cfg, acc, stop=stop)
        return trainer.test_only() if cfg.train.test_only else trainer.fit()
    except TrainingStopped as end:
        print(f"dassdp-train: {one_line(end)}", file=sys.stderr)
        if end.code == EXIT_PREEMPTED:  # every rank is here: the batch script must see the status first
            if acc.is_main_process:
                record_exit(end.code)
            acc.wait_for_everyone()
        return end.code
    finally:
        if acc is not None:
            acc.end_training()
            # Free the prepared model (and with it the process group it holds) now, while the interpreter
            # is alive. Left to the collector at interpreter shutdown, gloo's worker threads could still be
            # releasing a finished collective's tensors, which needs the GIL: that thread then exits
            # mid-destructor and std::terminate aborts a run that had finished correctly.
            trainer = None
            acc.free_memory()
            gc.collect()
        if lock is not None:
            lock.release()
        stop.uninstall()


def main(argv: list[str] | None = None) -> int:
    """Run one training (or evaluation) job; returns the exit status."""
    try:
        args, cfg = parse_args(argv)
    except ConfigError as err:
        return config_error_exit(err)
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    debug = args.debug or os.environ.get("DASSDP_DEBUG", "") not in ("", "0")
    try:
        code = run(cfg)
    except ConfigError as err:
        if debug:
            traceback.print_exc()
        code = config_error_exit(err)
    except input_errors() as err:
        if debug:
            traceback.print_exc()
        print(f"dassdp-train: {one_line(err)}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    record_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
