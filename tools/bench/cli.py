"""`dassdp-bench MODE [--json PATH] [--quick] [--set key=value ...]`: throughput figures you can trust."""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from pathlib import Path

import torch

from launch import environment as env
from tools.bench import report
from tools.bench.harness import Bench
from tools.bench.photos import default_cache

MODES = ("loaders", "model", "dassdp", "convert", "e2e")


def mode_module(mode: str):
    """The module implementing `mode` (FULL, QUICK settings and run(bench, settings, cache))."""
    return importlib.import_module(f"tools.bench.mode_{mode}")


def parse_value(text: str, default: object) -> object:
    """Parse a --set value with the type of the default (lists: comma-separated)."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not true/false")
        return text.lower() in ("true", "1")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, list):
        items = [t for t in text.split(",") if t]
        proto = default[0] if default else ""
        return [parse_value(t, proto) for t in items]
    return text


def settings_for(mode: str, quick: bool, overrides: list[str]) -> dict:
    """The mode's full or quick settings with --set overrides applied (unknown keys are an error)."""
    mod = mode_module(mode)
    s = dict(mod.QUICK if quick else mod.FULL)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: write key=value, e.g. --set repeats=5")
        if key not in s:
            raise SystemExit(f"--set {key}: not a setting of mode {mode}; valid keys: {', '.join(sorted(s))}")
        try:
            s[key] = parse_value(value, s[key])
        except ValueError as e:
            raise SystemExit(f"--set {key}={value}: {e}; expected the type of {s[key]!r}") from None
    return s


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="dassdp-bench", description=__doc__)
    p.add_argument("mode", choices=(*MODES, "all"), help="what to measure ('all' runs every mode)")
    p.add_argument("--json", type=Path, default=None, help="output JSON (default bench-out/MODE.json); "
                   "PNG charts are written next to it")
    p.add_argument("--quick", action="store_true", help="small data, few repeats (about a minute on 2 cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a mode setting (see the JSON 'settings' for the keys); repeatable")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--cache", type=Path, default=None, help="generated data cache (default "
                   "$DASSDP_BENCH_CACHE or ~/.cache/dassdp-bench)")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--official", default=None, metavar="PATH",
                   help="the official code: for mode model a folder with official_shim.py (and sj014/), "
                        "default $DASSDP_OFFICIAL; for e2e --set config=FILE the official checkout "
                        "(PATH/main.py or PATH/SpikingResformer/main.py); see docs/benchmarks.md")
    return p


def run_mode(mode: str, args: argparse.Namespace, device: torch.device, cache: Path) -> tuple[dict, Bench]:
    """Run one mode; return (its settings, its Bench)."""
    s = settings_for(mode, args.quick, args.overrides if args.mode != "all" else [])
    bench = Bench(mode, device)
    print(f"[dassdp-bench] {mode}: {s}", flush=True)
    mode_module(mode).run(bench, {**s, "device": str(device), "official_path": args.official}, cache)
    return s, bench


def load_warning(environment: dict) -> str | None:
    """A sentence when other work shared the CPU while measuring (1-minute load above the core count)."""
    cores = environment["hardware"]["usable_cores"]
    load = max(environment["load_average_start"][0], environment["load_average_end"][0])
    if load <= cores:
        return None
    return (f"measured under load: 1-minute load average up to {load:.1f} on {cores} cores, so figures are "
            f"lower and noisier than on an idle machine; multi-threaded torch ops suffer most (OpenMP "
            f"threads spin while waiting): compare with --threads 1 or OMP_WAIT_POLICY=passive")


def new_document(args: argparse.Namespace, argv: list[str], device: torch.device) -> dict:
    """The JSON skeleton: command, time, environment (hardware, threads, versions, git, load)."""
    return {"schema": report.SCHEMA_VERSION, "tool": "dassdp-bench", "command": ["dassdp-bench", *argv],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(), "quick": args.quick,
            "device": str(device),
            "environment": {"hardware": env.hardware(), "threads": env.threads(), "versions": env.versions(),
                            "git": env.git_revision(), "load_average_start": env.load_average()},
            "settings": {}, "results": [], "ratios": [], "notes": []}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dassdp-bench`."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here; use --device cpu")
    cache = args.cache or default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    if args.mode == "all" and args.overrides:
        raise SystemExit("--set applies to one mode; run `dassdp-bench MODE --set ...` per mode")
    modes = MODES if args.mode == "all" else (args.mode,)
    doc = new_document(args, sys.argv[1:] if argv is None else argv, device)
    print(f"[dassdp-bench] {report.header(doc)}", flush=True)
    for mode in modes:
        s, bench = run_mode(mode, args, device, cache)
        doc["settings"][mode] = s
        doc["results"] += bench.results
        doc["ratios"] += bench.ratios
        doc["notes"] += bench.notes
    doc["environment"]["load_average_end"] = env.load_average()
    warning = load_warning(doc["environment"])
    if warning:
        doc["notes"].append(warning)
        print(f"[dassdp-bench] WARNING: {warning}", file=sys.stderr)
    path = args.json or Path("bench-out") / f"{args.mode}.json"
    report.write_json(doc, path)
    if not args.no_charts:
        doc["charts"] = [str(p) for p in report.draw_charts(doc, path)]
        report.write_json(doc, path)
    print(report.format_table(doc))
    e = doc["environment"]
    print(f"[dassdp-bench] wrote {path} (load average {e['load_average_start']} -> "
          f"{e['load_average_end']} on {e['hardware']['usable_cores']} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
