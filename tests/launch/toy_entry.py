"""`accelerate launch tests/launch/toy_entry.py ARGS`: the real entry point with the stand-in parts."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy  # noqa: E402

from launch.train import main  # noqa: E402

if __name__ == "__main__":
    toy.install()
    sys.exit(main(sys.argv[1:]))
