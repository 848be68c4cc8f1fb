"""``python -m imbalance.train --config configs/<name>.yaml [--out DIR] [--resume | --overwrite]
[key=value ...]``; several processes: ``torchrun --nproc_per_node N -m imbalance.train ...``.

Exit status (:data:`EXIT_CODES`; the README's "Exit codes and errors" table):

* 0: the run finished;
* 1: a loss, the gradient or the weights became non-finite (the last good checkpoint is kept);
* 2: the configuration, the command line or the output folder is invalid (nothing was done);
* 3: another process is training in the output folder (nothing was done);
* 4: a checkpoint cannot be read (truncated, or not a checkpoint);
* 5: a data file cannot be read (annotations, or a truncated image);
* 6: the output folder cannot be written (permissions, a file in the way);
* 130: interrupted (Ctrl-C); ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imbalance.data.coco import AnnotationError
from imbalance.train.checkpoint import CheckpointError
from imbalance.train.config import ConfigError, load_config
from imbalance.train.loop import NonFiniteLossError, fit
from imbalance.train.rundir import RunLockedError

#: Exit status → what it means.
EXIT_CODES: dict[int, str] = {
    0: "the run finished",
    1: "a loss, the gradient or the weights became non-finite; the last good checkpoint is kept",
    2: "the configuration, the command line or the output folder is invalid; nothing was done",
    3: "another process is training in the output folder; nothing was done",
    4: "a checkpoint cannot be read (truncated, or not a checkpoint)",
    5: "a data file cannot be read (an annotation file, or a truncated image)",
    6: "the output folder cannot be written (permissions, or a file in the way)",
    130: "interrupted (Ctrl-C); --resume continues from the last checkpoint",
}

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
        fit(config, out=args.out, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as e:
        return _report(e, 1)
    except RunLockedError as e:
        return _report(e, 3)
    except ConfigError as e:
        return _report(e, 2)
    except CheckpointError as e:
        return _report(e, 4)
    except AnnotationError as e:
        return _report(e, 5)
    except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        return _report(f"cannot write{where}: {e.strerror or e}; choose an --out you can "
                       f"write to", 6)
    except KeyboardInterrupt:
        return _report("interrupted; --resume continues from the last checkpoint", 130)
    return 0


def _report(error: Exception | str, status: int) -> int:
    """Print ``error`` without a traceback, once per run (by rank 0 under torchrun); return
    ``status``."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
