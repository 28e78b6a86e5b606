"""The exceptions of a job and its exit statuses, in one leaf module every part of `launch/` may import.

Each exception carries one sentence for the user that names the file, key or value and says what to do;
the entry point prints it on one line (`--debug` or DASSDP_DEBUG=1 adds the traceback) and exits with:
  0   finished (or evaluated)
  1   an unexpected error: a bug, printed with its traceback
  2   bad input: config, checkpoint (--resume, --transfer, model.pretrained), data path or data, or the
      output folder is in use by another run
  3   non-finite loss (train.nonfinite=stop); the last good checkpoint is kept
  4   the training loader ended before its len()
  5   the training loader failed (a crashed worker); the position is saved when one process can save it
  75  preempted, resumable (EX_TEMPFAIL): SIGTERM, SIGINT or SIGUSR1, or train.time_limit / SLURM's job end
      near; every rank saved `last` at the same step: rerun with --resume auto
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL, "try again later": slurm_multinode.sh requeues the job


class ConfigError(ValueError):
    """A config problem, described in one line that names the file and key (exit status 2)."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be used, described in one line naming the file (exit status 2)."""


class FolderInUse(RuntimeError):
    """The output folder is locked by another live run, or cannot be locked (exit status 2)."""


class TrainingStopped(Exception):
    """The run must end early; `code` is the exit status, the message says why and what to do."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def one_line(message: object) -> str:
    """A message on one line (a library's multi-line text joined), for the entry point's error output."""
    return " ".join(str(message).split())
