"""One run per output folder: `<output_dir>/run.lock` names the run that writes there.

The lock is a small JSON file (host, pid, the process' start time, since, argv, a token), created whole
(written under a temporary name, then hard-linked to `run.lock`, which fails if one exists) by the main
process before it writes anything, and removed when the run ends. A second run on the folder reads it:
  - holder alive (or on another host, where it cannot be checked): refused at once, one line naming it;
  - holder dead on this host (SIGKILL, power cut; or its pid reused by another process, told apart by the
    process start time): the stale lock is taken over with a one-line message.
Read-only uses (`--test-only`, `--print-config`, `tools.plot_run`) take no lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from launch.errors import FolderInUse

LOCK_NAME = "run.lock"


def _process_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22 of stat; the name in (...) may hold spaces


def _alive(holder: dict) -> bool:
    """True unless `holder` is a process of this host that is gone (or whose pid now runs another one)."""
    if holder.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    pid = int(holder.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = _process_start(pid)
    return holder.get("pid_start") is None or start is None or start == holder["pid_start"]


def describe(holder: dict) -> str:
    """`host H, pid P, since T` of a lock's content."""
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


def _create(lock: Path, content: dict) -> bool:
    """Create `lock` holding `content` whole, only if absent; False when another file is there."""
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.{content['token'][:8]}")
    tmp.write_text(json.dumps(content) + "\n")
    try:
        os.link(tmp, lock)  # atomic, and never replaces an existing lock
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive create (a crash may leave it empty)
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(content) + "\n")
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _take_over(lock: Path, stale: dict) -> None:
    """Move the stale lock away; if another run replaced it meanwhile, put that one back."""
    moved = lock.with_name(f".{lock.name}.stale-{os.getpid()}")
    try:
        os.replace(lock, moved)
    except FileNotFoundError:
        return
    if _read(moved) != stale:  # a live lock taken by a third run since we read: restore it
        with contextlib.suppress(OSError):
            os.link(moved, lock)
    moved.unlink(missing_ok=True)


class RunLock:
    """The lock of one output folder, held by this process from `acquire` to `release`."""

    def __init__(self, folder: str | Path, say=None):
        self.folder, self.path = Path(folder), Path(folder) / LOCK_NAME
        self.say = say or (lambda msg: print(msg, file=sys.stderr))
        self.content: dict | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise FolderInUse naming its holder; a dead holder's lock is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "token": uuid.uuid4().hex}
        for _ in range(5):  # each round either wins, refuses, or removed a lock that was stale
            if _create(self.path, me):
                self.content = me
                return self
            holder = _read(self.path)
            if holder == {}:
                continue  # released between our two looks
            if holder is None:
                raise FolderInUse(f"{self.path} exists but is not a lock this trainer wrote; if no run uses "
                                  f"{self.folder}, delete it and retry")
            if _alive(holder):
                where = "" if holder.get("host") == me["host"] else " (another host: if that run is gone, " \
                                                                   f"delete {self.path})"
                raise FolderInUse(f"output folder {self.folder} is in use by another run ({describe(holder)})"
                                  f"{where}; wait for it to end or pass another --output-dir")
            self.say(f"dassdp-train: taking over the stale lock {self.path} ({describe(holder)}: that "
                     "process is gone)")
            _take_over(self.path, holder)
        raise FolderInUse(f"could not take {self.path}: other runs keep taking it; pass another --output-dir")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.content is not None and _read(self.path) == self.content:
            self.path.unlink(missing_ok=True)
        self.content = None


def lock_output(folder: str | Path, acc) -> RunLock | None:
    """The main process takes the folder's lock; every rank learns the outcome (FolderInUse everywhere)."""
    lock, error = None, None
    if acc.is_main_process:
        try:
            lock = RunLock(folder).acquire()
        except FolderInUse as e:
            error = str(e)
        except OSError as e:  # read-only, full or missing filesystem
            error = (f"cannot create the lock {Path(folder) / LOCK_NAME}: {e.strerror or e}; make the output "
                     "folder writable (and free some space) or pass another --output-dir")
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        raise FolderInUse(error)
    return lock
