"""Command line: ``python -m imbalance.data make|stats``.

    python -m imbalance.data make --preset tiny --out DIR [--seed N] [--workers N] [--knob value]
    python -m imbalance.data stats DIR [--split train] [--anchor-scale 0.5]

Every knob of :class:`~imbalance.data.synthetic.SyntheticConfig` is an option: the field
``objects_per_image`` is ``--objects-per-image``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

from imbalance.data.stats import AnchorConfig, anchor_statistics, class_counts
from imbalance.data.synthetic import BENCHMARKS, SyntheticConfig, make_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imbalance.data",
                                     description="The synthetic detection benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make", help="generate a synthetic COCO dataset",
                          description="Generate a synthetic COCO dataset. Knobs override the "
                                      "preset; see imbalance.data.synthetic.SyntheticConfig.")
    make.add_argument("--preset", choices=sorted(BENCHMARKS), default="tiny")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--workers", type=int, default=None,
                      help="worker processes (default: the CPU count, at most 8)")
    make.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    make.add_argument("--overwrite", action="store_true",
                      help="write into a non-empty folder this generator did not make (files of "
                           "the same names are replaced, none is deleted)")
    knobs = make.add_argument_group("knobs")
    for f in dataclasses.fields(SyntheticConfig):
        kind = int if f.type in (int, "int") else float
        knobs.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                           metavar=kind.__name__.upper(),
                           help="preset values: " + ", ".join(
                               f"{name} {getattr(c, f.name)}" for name, c in BENCHMARKS.items()))

    stats = sub.add_parser("stats", help="anchor and class statistics of a COCO dataset")
    stats.add_argument("root", help="dataset folder with annotations/instances_<split>.json")
    stats.add_argument("--split", default="train")
    stats.add_argument("--anchor-scale", type=float, default=0.5,
                       help="RetinaNet's anchor sizes and strides times this (default 0.5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "make":
        knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)
                 if getattr(args, f.name) is not None}
        start = time.perf_counter()
        try:
            out = make_dataset(args.out, args.preset, seed=args.seed, workers=args.workers,
                               progress=not args.no_progress, overwrite=args.overwrite, **knobs)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
        return 0

    annotations = f"{args.root}/annotations/instances_{args.split}.json"
    result = anchor_statistics(annotations, AnchorConfig.retinanet(args.anchor_scale))
    print(result)
    print("class counts:", class_counts(annotations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
