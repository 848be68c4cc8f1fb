"""A trained detector in one small file: its weights, its configuration and where it came from.

    python -m imbalance.train.weights export runs/focal weights/retinanet_focal.pt
    python -m imbalance.train.weights show weights/retinanet_focal.pt

    from imbalance.train.weights import load_weights
    trained = load_weights("weights/retinanet_focal.pt")
    trained.model(images)  # in eval mode, float32, on the CPU

A run's checkpoint (:mod:`imbalance.train.checkpoint`) holds what resuming needs: the optimiser's
momentum, the random generators, the schedule. :func:`export_weights` keeps only the model's
weights, in float16 by default (half the bytes of float32; a detector's outputs move by about
1e-3 of their scale), with the run's configuration and the provenance of its ``final.json``
(AP, seed, commit, date, device, command), so that a trained detector can be shipped and its
origin read back (:func:`load_weights`, ``show``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imbalance.files import write_atomic
from imbalance.models import build_model
from imbalance.train.checkpoint import load_checkpoint
from imbalance.train.config import TrainConfig, model_kwargs
from imbalance.train.rundir import RunDir

FORMAT = "imbalance-weights-1"
#: The fields of a run's ``final.json`` a weight file carries (besides the configuration).
PROVENANCE = ("name", "ap", "steps", "epochs", "num_classes", "train_images", "device",
              "wall_time_s", "date", "command", "git_commit", "git_dirty", "versions")


@dataclass
class TrainedModel:
    """A detector read back by :func:`load_weights`.

    Attributes:
        model: the detector, in eval mode, float32, on the CPU.
        config: the configuration it was trained with.
        provenance: the :data:`PROVENANCE` fields of its run's ``final.json`` (``ap`` is the
            COCO AP of the run's final evaluation, before the weights were rounded).
    """

    model: nn.Module
    config: TrainConfig
    provenance: dict[str, Any]


def export_weights(run: str | os.PathLike, path: str | os.PathLike,
                   dtype: torch.dtype = torch.float16) -> Path:
    """Write the trained model of the finished run in folder ``run`` to ``path``.

    Args:
        run: a run folder of :func:`imbalance.train.fit` that finished (it has ``final.json``
            and ``checkpoints/last.pt``, the weights at its last step).
        path: the file to write (atomically; its folder is made).
        dtype: floating-point weights are stored in this type (integer buffers as they are).

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: the run has not finished, or its last checkpoint is gone.
        ValueError: the checkpoint is not of the run's last step.
    """
    files = RunDir(run)
    if not files.final_file.is_file():
        raise FileNotFoundError(f"{files.path} holds no finished run (no final.json)")
    if not files.last_checkpoint.is_file():
        raise FileNotFoundError(f"{files.last_checkpoint} is missing: the weights of the run "
                                f"are gone (a kept run's folder keeps no checkpoint)")
    final = json.loads(files.final_file.read_text(encoding="utf-8"))
    state = load_checkpoint(files.last_checkpoint)
    if state.get("step") != final.get("steps"):
        raise ValueError(f"{files.last_checkpoint} is of step {state.get('step')}, the run ended "
                         f"at step {final.get('steps')}")
    weights = {k: v.to(dtype) if v.is_floating_point() else v
               for k, v in state["model"].items()}
    payload = {"format": FORMAT, "model": weights, "config": final["config"],
               "provenance": {k: final.get(k) for k in PROVENANCE}}
    return write_atomic(path, lambda f: torch.save(payload, f), binary=True)


def load_weights(path: str | os.PathLike) -> TrainedModel:
    """The detector of a file written by :func:`export_weights`.

    Raises:
        ValueError: the file is not such a file.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a weight file of imbalance.train.weights "
                         f"(format {FORMAT!r})")
    config = TrainConfig.from_dict(payload["config"])
    provenance = payload["provenance"]
    model = build_model(config.model.name, provenance["num_classes"], **model_kwargs(config))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in payload["model"].items()})
    return TrainedModel(model.eval(), config, provenance)


def describe(trained: TrainedModel) -> str:
    """A few lines on a trained model: what it is, how it scored, where it came from."""
    p, c = trained.provenance, trained.config
    ap = p.get("ap") or {}
    return "\n".join([
        f"{p.get('name')}: {c.model.name}, cls {c.model.cls_loss}, box {c.model.box_loss}, "
        f"seed {c.run.seed}; {p.get('steps')} steps ({p.get('epochs')} epochs)",
        f"AP {100 * ap.get('AP', float('nan')):.1f}, AP50 {100 * ap.get('AP50', float('nan')):.1f}"
        f" at the end of training (float32 weights)",
        f"trained {p.get('date')} on {p.get('device')}, commit {str(p.get('git_commit'))[:12]}"
        f"{' (uncommitted changes)' if p.get('git_dirty') else ''}",
        f"command: {p.get('command')}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance.train.weights",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write a finished run's trained model to a file")
    export.add_argument("run", help="the run folder")
    export.add_argument("path", help="the weight file to write")
    export.add_argument("--float32", action="store_true", help="keep float32 weights")
    show = sub.add_parser("show", help="say what a weight file holds")
    show.add_argument("path")
    args = parser.parse_args(argv)
    if args.command == "export":
        path = export_weights(args.run, args.path,
                              torch.float32 if args.float32 else torch.float16)
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    else:
        print(describe(load_weights(args.path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
