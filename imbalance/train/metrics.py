"""``metrics.jsonl``: one JSON object a line, appended and flushed as the run goes.

Training records hold ``step`` (= ``iteration``, optimiser steps done), ``epoch`` (fractional),
``lr``, ``loss`` and every loss term of the model, each the mean over the steps since the last
record, ``images_per_s`` over those steps and ``time`` (seconds since the run began). Evaluation
records hold ``step``, ``iteration``, ``epoch``, the COCO metrics at the top level (``AP``,
``AP50``, ...; so :func:`imbalance.plotting.plot_training_curves` plots them) and the whole
result under ``eval`` (``per_class`` included). :func:`imbalance.files.read_jsonl` reads
the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from imbalance.evaluation import METRICS
from imbalance.files import json_text, read_jsonl, write_text_atomic


class MetricsLog:
    """An append-only JSONL log; on a resume it is cut back to the checkpoint's records.

    Only the process with ``enabled`` (rank 0) touches the file.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.count = 0

    def truncate(self, records: int) -> None:
        """Keep the first ``records`` records (drops what a killed run logged after its last
        checkpoint); a missing file is created empty."""
        self.count = records
        if not self.enabled:
            return
        lines = []
        if self.path.exists():
            lines = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
        if len(lines) < records:
            raise RuntimeError(f"{self.path} has {len(lines)} records, the checkpoint expects "
                               f"{records}: the file was changed")
        write_text_atomic(self.path, "".join(line + "\n" for line in lines[:records]))

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to disk."""
        self.count += 1
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json_text(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every record so far."""
        return read_jsonl(self.path) if self.path.exists() else []


class LossWindow:
    """Running sums of the loss terms, images and seconds since the last record."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.sums: dict[str, float] = {}
        self.stats: dict[str, list[float]] = {}
        self.steps = 0
        self.images = 0
        self.seconds = 0.0

    def add(self, terms: dict[str, float], images: int, seconds: float) -> None:
        """One step's loss terms (averaged over the processes), its global batch and time."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.images += images
        self.seconds += seconds

    def add_statistics(self, stats: dict[str, float]) -> None:
        """One step's training statistics that are not losses (e.g. GHM's non-empty bins)."""
        for name, value in stats.items():
            total, count = self.stats.get(name, [0.0, 0])
            self.stats[name] = [total + value, count + 1]

    def summary(self) -> dict[str, float]:
        """``loss`` (the sum of the terms), each term, and ``images_per_s``; means over the
        window; then ``statistics``, the means of the statistics, if any were added."""
        means = {name: total / max(self.steps, 1) for name, total in self.sums.items()}
        out: dict[str, Any] = {"loss": sum(means.values())}
        out.update(means)
        out["images_per_s"] = self.images / self.seconds if self.seconds > 0 else 0.0
        if self.stats:
            out["statistics"] = {name: total / count
                                 for name, (total, count) in self.stats.items()}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "stats": {k: list(v) for k, v in self.stats.items()},
                "steps": self.steps, "images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.stats = {k: list(v) for k, v in state.get("stats", {}).items()}
        self.steps, self.images, self.seconds = state["steps"], state["images"], state["seconds"]


def eval_record(step: int, epoch: float, result: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of a COCO evaluation."""
    record: dict[str, Any] = {"step": step, "iteration": step, "epoch": round(epoch, 4)}
    record.update({m: result[m] for m in METRICS if m in result})
    record["eval"] = result
    return record


#: The fields of a training record that are not loss terms.
RECORD_FIELDS: tuple[str, ...] = ("step", "iteration", "epoch", "lr", "loss", "images_per_s",
                                  "time", "statistics")


def loss_terms(record: dict[str, Any]) -> dict[str, float]:
    """The loss terms of a :func:`train_record` (``classification``, ``bbox_regression``...)."""
    return {k: v for k, v in record.items() if k not in RECORD_FIELDS}


def train_record(step: int, epoch: float, lr: float, window: LossWindow,
                 elapsed: float) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of the steps in ``window``."""
    record: dict[str, Any] = {"step": step, "iteration": step, "epoch": round(epoch, 4),
                              "lr": lr}
    record.update(window.summary())
    record["time"] = round(elapsed, 3)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in record.items()}
