"""``python -m imbalance.train --config configs/<name>.yaml [--out DIR] [--resume | --overwrite]
[key=value ...]``; several processes: ``torchrun --nproc_per_node N -m imbalance.train ...``.

Exit status: 0 on success, 2 for an invalid configuration or output folder (nothing was done),
1 when a loss became non-finite (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imbalance.train.config import ConfigError, load_config
from imbalance.train.loop import NonFiniteLossError, fit

EPILOG = """\
overrides: dotted keys, values read as YAML, e.g.
  optim.lr=0.02 optim.iterations=200 model.cls_loss=ghm_c data.knobs.outlier_fraction=0.2
  run.device=cpu model.options.topk_candidates=500 preset=cpu

examples:
  python -m imbalance.train --config configs/retinanet_focal_smoke.yaml --out runs/smoke
  python -m imbalance.train --config configs/retinanet_focal_gpu.yaml --out runs/focal --resume
  torchrun --nproc_per_node 4 -m imbalance.train --config configs/libra_rcnn_gpu.yaml \\
      --out runs/libra run.sync_bn=true
"""


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = argparse.ArgumentParser(
        prog="python -m imbalance.train", description="Train a detector of the imbalance book.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML configuration file (configs/*.yaml)")
    p.add_argument("--preset", default=None,
                   help="preset when the config names none: smoke, cpu or gpu")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/<config name>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    group.add_argument("--overwrite", action="store_true",
                       help="delete the run files in --out and start over")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="configuration overrides, e.g. optim.lr=0.02")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_intermixed_args(argv)  # overrides on both sides of an option
    if args.config is None and args.preset is None:
        parser().error("give --config FILE (or --preset NAME)")
    try:
        config = load_config(args.config, args.overrides, preset=args.preset)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        try:
            fit(config, out=args.out, resume=args.resume, overwrite=args.overwrite)
        except NonFiniteLossError as e:
            _report(e)
            return 1
    except ConfigError as e:
        _report(e)
        return 2
    return 0


def _report(error: Exception) -> None:
    """Print ``error`` without a traceback, once per run (by rank 0 under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
