"""`accelerate launch tests/launch/launch_toy_entry.py ARGS`: the real entry point with the stand-in parts."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import launch_toy as toy  # noqa: E402

from launch.train import main  # noqa: E402

if __name__ == "__main__":
    # --parts model=real,hook=real,loader=mem chooses which packages stay real (default: all stand-ins)
    argv, kinds = sys.argv[1:], {}
    if argv[:1] == ["--parts"]:
        kinds = dict(x.split("=") for x in argv[1].split(","))
        argv = argv[2:]
    toy.install(**kinds)
    code = main(argv)
    # gloo's worker threads must be gone once main() returns (else they can abort the interpreter's exit)
    tasks = Path("/proc/self/task")  # Linux: one entry per thread, `comm` is its name
    names = [(t / "comm").read_text() for t in tasks.iterdir()] if tasks.exists() else []
    left = sum(n.startswith("pt_gloo") for n in names)
    print(f"gloo threads left: {left}", flush=True)
    sys.exit(code)
