"""`dassdp-convert`: one sub-command per source, plus `verify OUT`."""

from __future__ import annotations

import argparse
import json
import sys

from .common import ConvertError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected WxH, e.g. 128x128") from None


def _common(p: argparse.ArgumentParser, events: bool) -> None:
    p.add_argument(
        "src",
        nargs="?" if p.prog.endswith("fashion-mnist") else None,
        help="source folder (fashion-mnist: default /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--format", dest="fmt", choices=["ffcv", "dali"], default="ffcv")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument(
        "--shard-size", type=int, help="samples per shard/chunk (default 1000 JPEG, 10000 tiny, 256 frames)"
    )
    p.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable samples, list them in the manifest"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a finished conversion in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    if events:
        _frames_options(p, generic=p.prog.endswith(" events"))
        return
    p.add_argument("--max-resolution", type=int, help="resize so the longest side is at most this")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument(
        "--write-mode",
        choices=["raw", "jpg", "smart", "proportion"],
        help="FFCV image storage (default: smart for JPEG sources, raw for tiny images)",
    )
    p.add_argument(
        "--compress-probability", type=float, default=0.5, help="share stored as JPEG for 'proportion'"
    )
    p.add_argument(
        "--smart-threshold",
        type=int,
        default=256 * 256 * 3,
        help="'smart': store JPEG when raw RGB exceeds this many bytes",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the 'proportion' choice")


def _frames_options(p: argparse.ArgumentParser, generic: bool) -> None:
    p.add_argument(
        "--T", "--frames", dest="T", type=int, default=10, help="frames per sample (recipe: 10 or 16)"
    )
    p.add_argument("--crop", action="store_true", help="drop events outside --sensor-size instead of failing")
    if not generic:
        p.add_argument(
            "--sensor-size", type=_size, default=(128, 128), help="frame size WxH (default 128x128)"
        )
        p.add_argument(
            "--no-aedat4-transpose",
            dest="aedat4_transpose",
            action="store_false",
            help="keep tonic's AEDAT4 orientation (default: swap x/y to the AEDAT 2.0 orientation)",
        )
        return
    p.add_argument(
        "--sensor-size", type=_size, help="frame size WxH (default: from the files; needed for .bin and .npy)"
    )
    p.add_argument(
        "--split-by",
        choices=["number", "time"],
        default="number",
        help="frames of equal event count, or T equal time windows over each recording",
    )
    split = p.add_mutually_exclusive_group()
    split.add_argument("--train-per-class", type=int, help="first N recordings per class train, rest val")
    split.add_argument(
        "--val-fraction",
        type=float,
        help="last share of each class -> val (default 0.1 when neither is given)",
    )
    p.add_argument(
        "--order",
        choices=["lexical", "natural"],
        default="lexical",
        help="file order inside a class before the split (lexical: torchvision DatasetFolder)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of dassdp-convert."""
    ap = argparse.ArgumentParser(prog="dassdp-convert", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("imagenet", "class-folder tree with train/ and val/"),
        ("folder", "any class-folder tree"),
        ("cifar10", "cifar-10-batches-py/ (python pickles)"),
        ("cifar100", "cifar-100-python/ (python pickles)"),
        ("fashion-mnist", "idx-ubyte files (.gz or not)"),
        ("cifar10dvs", "tonic CIFAR10DVS/<class>/*.aedat4 or the AEDAT 2.0 release"),
        ("dvs128gesture", "the DvsGesture AEDAT 3.1 release or tonic's ibmGestureTrain/Test tree"),
        (
            "events",
            "any class-folder tree of recordings: .aedat4, .aedat (2.0), .bin (N-MNIST), .npy (tonic)",
        ),
    ):
        p = sub.add_parser(name, help=help_, prog=f"dassdp-convert {name}")
        _common(p, events=name in ("cifar10dvs", "dvs128gesture", "events"))
        if name == "folder":
            p.add_argument("--val-fraction", type=float, default=0.1, help="last share of each class -> val")
        if name == "cifar100":
            p.add_argument("--label-type", choices=["fine", "coarse"], default="fine")
        if name == "dvs128gesture":
            p.add_argument("--layout", choices=["auto", "release", "tonic"], default="auto")
        if name == "cifar10dvs":
            p.add_argument("--layout", choices=["auto", "tonic", "aedat2"], default="auto")
            p.add_argument(
                "--train-per-class", type=int, default=900, help="first N per class train, rest val"
            )
            p.add_argument(
                "--order",
                choices=["lexical", "natural"],
                default="lexical",
                help="file order inside a class before the split; lexical (torchvision DatasetFolder) gives "
                "the official split, natural puts x_2 before x_10",
            )
    v = sub.add_parser("verify", help="re-read OUT and check it against its manifest")
    v.add_argument("out")
    v.add_argument("--workers", type=int, help="processes (default: all cores)")
    v.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the dassdp-convert console script."""
    args = vars(build_parser().parse_args(argv))
    cmd, quiet = args.pop("cmd"), args.pop("quiet")
    try:
        if cmd == "verify":
            from .verify import verify

            print(json.dumps(verify(args["out"], progress=not quiet, workers=args["workers"])))
            return 0
        from .api import convert

        src, out, fmt = args.pop("src"), args.pop("out"), args.pop("fmt")
        overwrite = args.pop("overwrite")
        man = convert(cmd, src, out, fmt, overwrite=overwrite, progress=not quiet, **args)
    except ConvertError as e:
        print(f"dassdp-convert: error: {e}", file=sys.stderr)
        return 2
    counts = {s: v["count"] for s, v in man["splits"].items()}
    print(f"dassdp-convert: wrote {out} ({fmt}, {man['kind']}): {counts}, skipped {len(man['skipped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
