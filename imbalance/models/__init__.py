"""Detectors built from torchvision's parts, with the book's losses, samplers and neck plugged in.

* :func:`retinanet`: torchvision's RetinaNet with pluggable classification and box losses.
* :func:`libra_rcnn`: torchvision's Faster R-CNN + FPN with IoU-balanced sampling, the Balanced
  Feature Pyramid and Balanced L1 loss, each switchable (all off = the Faster R-CNN baseline).
* :func:`build_model`: either, by name (what the training configs use).

``num_classes`` is always K, the number of object categories (``CocoDetection.num_classes``);
labels in targets and detections run over 1..K.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from imbalance.models.backbones import BackboneWithNeck, resnet_fpn
from imbalance.models.libra_rcnn import libra_rcnn
from imbalance.models.retinanet import BOX_LOSSES, CLS_LOSSES, retinanet

MODELS: dict[str, Callable[..., nn.Module]] = {"retinanet": retinanet, "libra_rcnn": libra_rcnn}


#: What each factory passes on through ``**kwargs`` (to the torchvision detector, which passes
#: its own on to the image transform), and the arguments the factory itself fills in there.
_FORWARDS: dict[str, tuple[tuple[Callable[..., Any], ...], frozenset[str]]] = {
    "retinanet": ((TorchvisionRetinaNet, GeneralizedRCNNTransform),
                  frozenset({"backbone", "num_classes", "anchor_generator", "head"})),
    "libra_rcnn": ((FasterRCNN, GeneralizedRCNNTransform),
                   frozenset({"backbone", "num_classes", "box_head", "box_predictor"})),
}


def _keywords(fn: Callable[..., Any]) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def model_options(name: str) -> tuple[str, ...]:
    """The keyword options ``build_model(name, K, **options)`` takes: the factory's own and what
    it passes on to torchvision (the detector's and its image transform's), sorted."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    names = _keywords(MODELS[name]) - {"num_classes"}
    forwards, filled = _FORWARDS[name]
    for fn in forwards:
        names |= _keywords(fn) - filled - {"self"}
    return tuple(sorted(n for n in names if not n.startswith("_")))


def check_model_options(name: str, options: dict[str, Any] | Any) -> None:
    """Raise ``ValueError`` naming each option that ``name`` does not take, with the closest
    names it does take (torchvision's ``**kwargs`` would otherwise swallow a typo)."""
    known = model_options(name)
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
            raise ValueError(f"{name} takes no option {key!r}{hint} (it takes {list(known)})")


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """``MODELS[name](num_classes, **options)``, with clear errors for an unknown name or an
    option the model does not take (:func:`model_options`)."""
    check_model_options(name, options)
    return MODELS[name](num_classes, **options)


__all__ = [
    "BOX_LOSSES",
    "CLS_LOSSES",
    "MODELS",
    "BackboneWithNeck",
    "build_model",
    "check_model_options",
    "model_options",
    "libra_rcnn",
    "resnet_fpn",
    "retinanet",
]
