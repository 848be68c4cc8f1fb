"""Data: the synthetic benchmark, a reader for any COCO dataset, transforms and statistics.

The submodules load on first use, so that ``python -m imbalance.data make`` and the generator's
worker processes do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AnnotationError": "coco",
    "CocoAnnotations": "coco",
    "CocoDetection": "coco",
    "collate": "coco",
    "load_coco": "coco",
    "BENCHMARKS": "synthetic",
    "SyntheticConfig": "synthetic",
    "config_for": "synthetic",
    "make_dataset": "synthetic",
    "render_image": "synthetic",
    "AnchorConfig": "stats",
    "AnchorStats": "stats",
    "SizeHistogram": "stats",
    "anchor_statistics": "stats",
    "class_counts": "stats",
    "object_size_histogram": "stats",
    "Compose": "transforms",
    "Normalize": "transforms",
    "RandomHorizontalFlip": "transforms",
    "Resize": "transforms",
    "ToTensor": "transforms",
    "detection_transforms": "transforms",
}

__all__ = [
    "AnchorConfig",
    "AnchorStats",
    "AnnotationError",
    "CocoAnnotations",
    "CocoDetection",
    "Compose",
    "Normalize",
    "BENCHMARKS",
    "RandomHorizontalFlip",
    "Resize",
    "SizeHistogram",
    "SyntheticConfig",
    "ToTensor",
    "anchor_statistics",
    "class_counts",
    "collate",
    "config_for",
    "detection_transforms",
    "load_coco",
    "make_dataset",
    "object_size_histogram",
    "render_image",
]

if TYPE_CHECKING:
    from imbalance.data.coco import (
        AnnotationError,
        CocoAnnotations,
        CocoDetection,
        collate,
        load_coco,
    )
    from imbalance.data.stats import (
        AnchorConfig,
        AnchorStats,
        SizeHistogram,
        anchor_statistics,
        class_counts,
        object_size_histogram,
    )
    from imbalance.data.synthetic import (
        BENCHMARKS,
        SyntheticConfig,
        config_for,
        make_dataset,
        render_image,
    )
    from imbalance.data.transforms import (
        Compose,
        Normalize,
        RandomHorizontalFlip,
        Resize,
        ToTensor,
        detection_transforms,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'imbalance.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"imbalance.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
