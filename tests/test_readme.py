"""Every command in the README runs as written, as far as it can here; the config reference is current.

Training commands are resolved with `--print-config` (config files, flags and overrides checked strictly);
conversion, benchmark and study commands are parsed by their real argument parsers; files and make targets
named in commands must exist. What needs a dataset or GPU that is not here stops at that boundary.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tools.config_reference import check

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """Command lines of the ```bash blocks (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    cmds = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    return cmds


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        argv = argv[1:]
    if argv and argv[0].startswith(".venv/bin/"):
        argv = [argv[0][len(".venv/bin/"):]] + argv[1:]
    return argv


def _train_args(argv: list[str]) -> list[str]:
    if argv[0] == "accelerate":
        assert "-m" in argv and argv[argv.index("-m") + 1] == "launch.train", argv
        cfg = argv[argv.index("--config_file") + 1] if "--config_file" in argv else None
        assert cfg is None or (ROOT / cfg).is_file(), f"missing accelerate config {cfg}"
        return argv[argv.index("-m") + 2:]
    return argv[1:] if argv[0] == "dassdp-train" else argv[3:]  # python -m launch.train


def check_command(cmd: str) -> None:
    """Run or parse one README command; raise on any problem."""
    argv = _strip_env(shlex.split(cmd))
    head = argv[0]
    if head == "make":
        for target in argv[1:]:
            assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M), target
    elif head == "sbatch":
        assert (ROOT / argv[-1]).is_file(), argv[-1]
    elif head in ("dassdp-train", "accelerate") or argv[:3] == ["python", "-m", "launch.train"]:
        from launch.cli import parse_args

        args, cfg = parse_args(_train_args(argv) + ["--print-config"])
        assert args.print_config and cfg.model.num_classes
    elif head == "dassdp-convert":
        from tools.convert.cli import build_parser

        build_parser().parse_args(argv[1:])
    elif head == "dassdp-bench":
        from tools.bench.cli import build_parser

        build_parser().parse_args(argv[1:])
    elif head == "dassdp-study":
        from tools.study.cli import build_parser

        build_parser().parse_args(argv[1:])
    elif argv[:2] == ["python", "-m"]:
        module = argv[2]
        out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]
    else:
        raise AssertionError(f"README command not understood by this test: {cmd}")


@pytest.mark.parametrize("cmd", readme_commands())
def test_readme_command(cmd):
    check_command(cmd)


def test_readme_has_commands():
    cmds = readme_commands()
    assert any(c.startswith("make demo") for c in cmds) and any(c.startswith("make test") for c in cmds)
    assert sum("launch.train" in c or c.startswith("dassdp-train") for c in cmds) >= 6


def test_config_reference_in_sync():
    assert check(README), "stale config reference: `python -m tools.config_reference --write README.md`"
