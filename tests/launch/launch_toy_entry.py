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
    sys.exit(main(argv))
