"""COCO evaluation during and after training, shared between the processes of a run.

Each rank runs the detector over its share of the validation images; rank 0 gathers every
detection, scores them with :func:`imbalance.evaluation.coco_evaluate` and sends the result to
the others.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import Dataset, Subset

from imbalance.evaluation import bootstrap_ap, coco_evaluate, detect
from imbalance.train import distributed


def evaluate(model: nn.Module, dataset: Dataset, gt: str | os.PathLike | COCO, *,
             device: torch.device, batch_size: int, score_threshold: float,
             info: distributed.DistInfo, bootstrap: int = 0) -> dict[str, Any]:
    """COCO AP of ``model`` (unwrapped, not DDP) on ``dataset``; the same dict in every rank.
    With ``bootstrap`` resamples (>= 2) it also holds ``"bootstrap"``, the evaluation noise of AP
    (:func:`imbalance.evaluation.bootstrap_ap`)."""
    indices = list(range(info.rank, len(dataset), info.world_size))
    part = Subset(dataset, indices) if info.enabled else dataset
    detections = detect(model, part, device=device, batch_size=batch_size,
                        score_threshold=score_threshold, progress=False)
    gathered = distributed.all_gather_objects(detections)
    result = None
    if info.is_main:
        every = [d for chunk in gathered for d in chunk]
        result = coco_evaluate(gt, every)
        if bootstrap >= 2 and every:
            result["bootstrap"] = bootstrap_ap(gt, every, bootstrap)
    return distributed.broadcast_object(result)
