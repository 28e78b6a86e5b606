"""The exceptions of a job, in one leaf module every part of `launch/` may import.

Each carries one sentence for the user that names the file, key or value and says what to do; the entry
point prints it on one line and exits with the status below.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, described in one line that names the file and key (exit status 2)."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be used, described in one line naming the file (exit status 2)."""


class TrainingStopped(Exception):
    """The run must end early; `code` is the exit status, the message says why and what to do."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
