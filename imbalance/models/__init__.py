"""Detectors built from torchvision's parts, with the book's losses, samplers and neck plugged in.

* :func:`retinanet`: torchvision's RetinaNet with pluggable classification and box losses.
* :func:`libra_rcnn`: torchvision's Faster R-CNN + FPN with IoU-balanced sampling, the Balanced
  Feature Pyramid and Balanced L1 loss, each switchable (all off = the Faster R-CNN baseline).
* :func:`build_model`: either, by name (what the training configs use).

``num_classes`` is always K, the number of object categories (``CocoDetection.num_classes``);
labels in targets and detections run over 1..K.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from imbalance.models.backbones import BackboneWithNeck, resnet_fpn
from imbalance.models.libra_rcnn import libra_rcnn
from imbalance.models.retinanet import BOX_LOSSES, CLS_LOSSES, retinanet

MODELS: dict[str, Callable[..., nn.Module]] = {"retinanet": retinanet, "libra_rcnn": libra_rcnn}


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """``MODELS[name](num_classes, **options)``, with a clear error for an unknown name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](num_classes, **options)


__all__ = [
    "BOX_LOSSES",
    "CLS_LOSSES",
    "MODELS",
    "BackboneWithNeck",
    "build_model",
    "libra_rcnn",
    "resnet_fpn",
    "retinanet",
]
