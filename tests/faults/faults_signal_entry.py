"""`accelerate launch tests/faults/faults_signal_entry.py ARGS`: the real entry point, real model and DA-SSDP
hook on the in-memory loader. FAULTS_SIGTERM=RANK:N sends that rank SIGTERM at its N-th training forward;
FAULTS_BLOCK=N:PATH makes the N-th training forward write PATH.waiting and wait until PATH exists."""
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))

import launch_toy as toy  # noqa: E402

from launch import parts  # noqa: E402
from launch.train import main  # noqa: E402


def at_forward(n: int, act) -> None:
    """Wrap parts.build_model: call act() at the n-th training forward."""
    build, seen = parts.build_model, [0]

    def hit(module, inputs, output):
        if module.training:
            seen[0] += 1
            if seen[0] == n:
                act()

    def build_model(cfg, device=None):
        model = build(cfg, device)
        model.register_forward_hook(hit)
        return model

    parts.build_model = build_model


def wait_for(path: Path) -> None:
    """Announce (PATH.waiting), then wait until `path` exists."""
    Path(f"{path}.waiting").write_text(str(os.getpid()))
    while not path.exists():
        time.sleep(0.05)


if __name__ == "__main__":
    toy.install(model="real", hook="real", loader="mem", n=32)
    rank, _, n = os.environ.get("FAULTS_SIGTERM", "").partition(":")
    if n and os.environ.get("RANK", "0") == rank:
        at_forward(int(n), lambda: os.kill(os.getpid(), signal.SIGTERM))
    block, _, path = os.environ.get("FAULTS_BLOCK", "").partition(":")
    if block:
        at_forward(int(block), lambda: wait_for(Path(path)))
    sys.exit(main(sys.argv[1:]))
