"""The official SpikingResformer as a benchmark case, run in a worker process (official_worker.py).

The official code is never part of this repository. The user points at a folder (`--official PATH` or the
environment variable DASSDP_OFFICIAL) that holds:
  official_shim.py  defines build_official(variant, T, img_size, num_classes) -> the official nn.Module
                    (puts the official checkout on sys.path, switches its neurons to backend='torch');
  sj014/            optional: spikingjelly 0.0.0.0.14 installed with `pip install --target`, which the
                    official code was written for; it shadows this venv's spikingjelly in the worker.
Set-up commands: docs/benchmarks.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENV_VAR = "DASSDP_OFFICIAL"
SHIM = "official_shim.py"
WORKER = Path(__file__).with_name("official_worker.py")


def find_official(path: str | os.PathLike | None) -> Path:
    """The official-code folder from `path` or $DASSDP_OFFICIAL; SystemExit in one line when unusable."""
    given = path or os.environ.get(ENV_VAR)
    hint = (f"pass --official PATH or set {ENV_VAR} to a folder holding {SHIM} (and sj014/ with spikingjelly "
            "0.0.0.0.14), see docs/benchmarks.md, or run without the official code: --set official=false")
    if not given:
        raise SystemExit(f"dassdp-bench: the official code is needed (setting official=true): {hint}")
    root = Path(given).expanduser().resolve()
    if not (root / SHIM).is_file():
        raise SystemExit(f"dassdp-bench: {root / SHIM} does not exist: {hint}")
    return root


class OfficialWorker:
    """A worker process serving official training steps; `case(...)` makes a harness case of one step.

    The pipe adds well under a millisecond to a step measured from here.
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        full = {**os.environ, **(env or {})}
        path = [str(root / "sj014")] if (root / "sj014").is_dir() else []
        full["PYTHONPATH"] = os.pathsep.join([*path, str(root)])
        self.spikingjelly: str | None = None
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], env=full, cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def ask(self, req: dict) -> dict:
        """Send one request, wait for its answer ({"ok": False, "error": ...} when the worker is gone)."""
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:  # broken pipe: the worker is gone
            line = ""
        if not line:
            return {"ok": False, "error": f"worker exited (code {self.proc.poll()}; killed for memory?)"}
        out = json.loads(line)
        self.spikingjelly = out.get("spikingjelly", self.spikingjelly)
        return out

    def case(self, c: dict, compile: bool):
        """A harness case: one official training step of configuration `c`; returns the number of images."""
        req = {"variant": c["name"], "B": c["B"], "T": c["T"], "px": c["res"], "classes": c["classes"],
               "dtype": c["dtype"], "compile": compile, "steps": 1, "warmup": 0}

        def run() -> int:
            out = self.ask(req)
            if not out.get("ok"):
                raise RuntimeError(f"official worker failed on {c['name']}: {out.get('error')}")
            return c["B"]
        return run

    def close(self) -> None:
        """End the worker (it exits when its stdin closes)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)
