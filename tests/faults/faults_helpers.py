"""Run a function in a forked child (own process group) with a timeout; SIGKILL injection helpers."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def die() -> None:
    """SIGKILL this process and its whole group (the child and any worker processes it started)."""
    os.killpg(0, signal.SIGKILL)


def in_child(fn, log: Path, timeout: float = 120.0) -> int:
    """fork, run fn() (returns an exit code) with output to `log`; returns the exit code, -9 if killed."""
    pid = os.fork()
    if pid == 0:  # child
        code = 70
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = int(fn() or 0)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 71
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"child hung for {timeout} s; log: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    try:  # leftovers of a killed group (e.g. a process pool) must not outlive the test
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Counter:
    """Counts calls per kind; kills the process at the chosen (kind, n)."""

    def __init__(self, kill: tuple[str, int] | None = None):
        self.kill, self.n = kill, {}

    def hit(self, kind: str) -> None:
        """Count one event of `kind`; SIGKILL when it is the chosen one."""
        self.n[kind] = self.n.get(kind, 0) + 1
        if self.kill == (kind, self.n[kind]):
            die()


def install_counted_model(n_samples: int, hit) -> None:
    """In a child: the real model and DA-SSDP hook on in-memory data (launch_toy), every forward pass of the
    model reported as `hit("step")` in training or `hit("eval")` in evaluation."""
    import launch_toy as toy

    from launch import parts

    toy.install(None, model="real", hook="real", loader="mem", n=n_samples)
    build = parts.build_model

    def build_model(cfg, device=None):
        model = build(cfg, device)
        model.register_forward_hook(lambda m, i, o: hit("step" if m.training else "eval"))
        return model

    parts.build_model = build_model
