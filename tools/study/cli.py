"""`dassdp-study run|report`: paired-seed studies of the trainer (arms x seeds), local or on SLURM.

    dassdp-study run --config configs/demo.yaml --seeds 5 --out studies/fmnist \\
        [shared KEY=VALUE ...] --arm baseline dassdp.enabled=false --arm dassdp dassdp.enabled=true
    dassdp-study report studies/fmnist

Shared overrides come before the first --arm: everything after `--arm NAME` up to the next flag belongs
to that arm. Exit status: 0 all runs finished, 1 a run failed or is unfinished, 2 a usage error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.study.study import Study, StudyError, parse_arms, prepare


def build_parser() -> argparse.ArgumentParser:
    """The `dassdp-study` argument parser."""
    p = argparse.ArgumentParser(prog="dassdp-study", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or finish) every arm x seed, then write the report",
                       epilog="Shared overrides go before the first --arm.")
    r.add_argument("--config", required=True, metavar="FILE", help="the trainer's YAML config")
    r.add_argument("--seeds", type=int, required=True, metavar="N", help="paired seeds: train.seed + 0..N-1")
    r.add_argument("--out", required=True, metavar="DIR", help="study folder: OUT/<arm>/seed-<k>/")
    r.add_argument("--arm", nargs="+", action="append", metavar="ARM", help="NAME [KEY=VALUE ...]: an arm's "
                   "name, then its dotted overrides (two or more arms; the first is the reference)")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides shared by every arm")
    r.add_argument("--no-interval", action="store_true", help="allow --seeds 1: per-arm numbers only")
    r.add_argument("--launcher", choices=["local", "slurm"], default="local")
    r.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="local: N runs at once, the cores split among them")
    s = r.add_argument_group("slurm (submitit job array)")
    s.add_argument("--slurm-partition", metavar="P")
    s.add_argument("--gpus-per-run", type=int, default=1, metavar="G",
                   help="G > 1 runs through `accelerate launch --num_processes G`")
    s.add_argument("--time", type=int, default=24 * 60, metavar="MIN", help="time limit per run (minutes)")
    s.add_argument("--cpus-per-run", type=int, metavar="C")
    s.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default=None,
                   help="submitit executor (default: SLURM when available); local/debug run here")
    s.add_argument("--no-wait", action="store_true", help="submit and exit; `report` later")
    rep = sub.add_parser("report", help="(re)write and print the report of a study folder")
    rep.add_argument("out", metavar="DIR")
    return p


def cmd_run(args) -> int:
    """Prepare the study, launch what is unfinished, write and print the report."""
    from tools.study import launchers

    if args.launcher == "local":
        launchers.core_slots(args.parallel)  # refuse a bad --parallel before anything is written
    study = prepare(Path(args.out), Path(args.config), parse_arms(args.arm), args.seeds, args.overrides,
                    interval=not args.no_interval)
    todo = [r for r in study.runs() if r.state() != "done"]
    skipped = len(study.runs()) - len(todo)
    _say(f"dassdp-study: {study.out}: {len(todo)} run(s) to do, {skipped} finished run(s) kept")
    if args.launcher == "slurm":
        opts = launchers.SlurmOptions(args.slurm_partition, args.gpus_per_run, args.time, args.cpus_per_run,
                                      args.slurm_cluster, not args.no_wait)
        launchers.run_slurm(todo, study.out / "slurm", opts, say=_say)
        if args.no_wait and todo:
            _say(f"dassdp-study: submitted; when the jobs end: dassdp-study report {study.out}")
            return 0
    else:
        launchers.run_local(todo, args.parallel, say=_say)
    return cmd_report(study)


def cmd_report(study: Study) -> int:
    """Write report.json/.md and the PNGs, print the Markdown; 1 when a run is not finished."""
    from tools.study.markdown import to_markdown
    from tools.study.report import build_report, write_report

    report = build_report(study)
    paths = write_report(study, report)
    print(to_markdown(report))
    print("dassdp-study: wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    for x in report["not_finished"]:
        print(f"dassdp-study: {x['run']} is {x['state']}: see {x['log']}", file=sys.stderr)
    return 1 if report["not_finished"] else 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dassdp-study`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        return cmd_report(Study.load(Path(args.out)))
    except StudyError as err:
        print(f"dassdp-study: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
