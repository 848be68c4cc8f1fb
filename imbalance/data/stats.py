"""Dataset statistics: anchors per image under the RetinaNet rule, class counts, object sizes.

All three read boxes from the annotation file only; no image is decoded. A *source* is an
annotation file path, a pycocotools ``COCO`` object, a :class:`~imbalance.data.coco.CocoAnnotations`
or a :class:`~imbalance.data.coco.CocoDetection`. Crowd annotations are left out everywhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from imbalance.data.coco import CocoAnnotations, CocoDetection, load_coco
from imbalance.data.transforms import Resize

Source = str | os.PathLike | CocoAnnotations | CocoDetection | Any

COCO_SMALL = 32**2  # COCO's area ranges: small < 32², medium < 96², large ≥ 96²
COCO_MEDIUM = 96**2


@dataclass(frozen=True)
class AnchorConfig:
    """Anchors of a feature pyramid, as torchvision's RetinaNet lays them out.

    Level ``l`` has stride ``strides[l]`` and anchors of side ``sizes[l] * scale`` for each scale
    in ``scales`` and each aspect ratio (height / width) in ``aspect_ratios``, centred on the
    grid (0, stride, 2·stride, ...) as :class:`AnchorGenerator` centres them.

    The default is RetinaNet's pyramid (sizes 32..512, strides 8..128) at half scale: sizes
    16..256, strides 4..64, for the benchmark's 128–512 pixel images.
    """

    sizes: tuple[float, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.strides) or not self.sizes:
            raise ValueError(f"need one size per stride; got sizes={self.sizes}, "
                             f"strides={self.strides}")
        if any(int(s) != s or s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive integers; got {self.strides}")

    @classmethod
    def retinanet(cls, scale: float = 1.0) -> AnchorConfig:
        """RetinaNet's anchors (Lin et al. 2017) with sizes and strides multiplied by ``scale``."""
        strides = tuple(max(1, round(8 * 2**i * scale)) for i in range(5))
        return cls(sizes=tuple(32 * 2**i * scale for i in range(5)), strides=strides)

    @property
    def anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    def generator(self) -> AnchorGenerator:
        """The torchvision :class:`AnchorGenerator` of this configuration."""
        sizes = tuple(tuple(s * k for k in self.scales) for s in self.sizes)
        return AnchorGenerator(sizes, (tuple(self.aspect_ratios),) * len(sizes))

    def anchors(self, height: int, width: int) -> torch.Tensor:
        """All anchors of an image, float32 (A, 4) in (x1, y1, x2, y2).

        Like torchvision's detectors, the image is padded to a multiple of the largest stride;
        level l then has a grid of padded size / stride l.
        """
        top = max(self.strides)
        padded = (math.ceil(height / top) * top, math.ceil(width / top) * top)
        images = ImageList(torch.empty(1, 3, *padded), [(height, width)])
        features = [torch.empty(1, 1, padded[0] // s, padded[1] // s) for s in self.strides]
        return self.generator()(images, features)[0]


@dataclass(frozen=True)
class AnchorStats:
    """Anchors per image by their training role.

    Attributes:
        image_ids: int64 (N,), the images in order.
        objects: int64 (N,), non-crowd ground-truth boxes per image.
        anchors: int64 (N,), anchors per image.
        positives, negatives, ignored: int64 (N,), anchors per image in each role.
        config: the anchors.
    """

    image_ids: np.ndarray
    objects: np.ndarray
    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    ignored: np.ndarray
    config: AnchorConfig

    @property
    def fg_bg_ratio(self) -> float:
        """Total positives / total negatives: the foreground:background ratio (1 : 1/ratio)."""
        return float(self.positives.sum() / max(int(self.negatives.sum()), 1))

    @property
    def positives_per_object(self) -> float:
        return float(self.positives.sum() / max(int(self.objects.sum()), 1))

    def summary(self) -> dict[str, float]:
        """Totals and per-image means, for a table."""
        n = max(len(self.image_ids), 1)
        return {
            "images": len(self.image_ids),
            "objects": int(self.objects.sum()),
            "anchors_per_image": float(self.anchors.sum() / n),
            "positives_per_image": float(self.positives.sum() / n),
            "negatives_per_image": float(self.negatives.sum() / n),
            "ignored_per_image": float(self.ignored.sum() / n),
            "positives_per_object": self.positives_per_object,
            "fg_bg_ratio": self.fg_bg_ratio,
        }

    def __str__(self) -> str:
        s = self.summary()
        # two lines, so that it fits a printed page (the book's code cells are 88 wide)
        return (f"{s['images']} images, {s['objects']} objects, "
                f"{s['anchors_per_image']:.0f} anchors per image:\n"
                f"{s['positives_per_image']:.1f} positive, {s['negatives_per_image']:.1f} "
                f"negative, {s['ignored_per_image']:.1f} ignored; "
                f"fg:bg = 1:{1 / max(self.fg_bg_ratio, 1e-12):.0f}")


def _annotations(source: Source) -> CocoAnnotations:
    if isinstance(source, CocoAnnotations):
        return source
    if isinstance(source, CocoDetection):
        return source.coco
    if isinstance(source, str | os.PathLike):
        return load_coco(source, check_files=False)
    dataset = getattr(source, "dataset", None)  # a pycocotools COCO object
    if isinstance(dataset, dict) and "images" in dataset:
        images = dataset["images"]
        by_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
        for ann in dataset.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
        categories = sorted(dataset.get("categories", []), key=lambda c: c["id"])
        return CocoAnnotations(None, None, images, by_image, categories)  # type: ignore[arg-type]
    raise TypeError(f"cannot read annotations from {type(source).__name__}")


def _boxes(info: dict, anns: list[dict], resize: Resize | None) -> tuple[torch.Tensor, int, int]:
    """Non-crowd boxes of one image, float32 (G, 4) xyxy, after ``resize``; and (H, W)."""
    height, width = info["height"], info["width"]
    boxes = torch.tensor([a["bbox"] for a in anns if not a.get("iscrowd", 0)],
                         dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    if resize is not None:
        new_h, new_w = resize.output_size(height, width)
        boxes *= torch.tensor([new_w / width, new_h / height] * 2)
        height, width = new_h, new_w
    return boxes, height, width


def anchor_statistics(source: Source, anchors: AnchorConfig | None = None, *,
                      pos_iou: float = 0.5, neg_iou: float = 0.4,
                      low_quality_matches: bool = True,
                      resize: Resize | None = None) -> AnchorStats:
    """Positive, negative and ignored anchors per image, by RetinaNet's IoU rule.

    An anchor is positive when its largest IoU with a ground-truth box is ≥ ``pos_iou``, negative
    when it is < ``neg_iou`` and ignored in between. With ``low_quality_matches`` (the default,
    as torchvision's RetinaNet), each box's best anchors (ties included) are positive too, even
    below ``pos_iou``: this is torchvision's ``Matcher(pos_iou, neg_iou, True)``, which this
    function runs. An image without boxes has only negatives.

    Args:
        source: the dataset (see the module docstring).
        anchors: the anchor layout; default :class:`AnchorConfig()`.
        pos_iou, neg_iou: the IoU thresholds.
        low_quality_matches: make each box's best anchors positive.
        resize: the resize the model applies first, if any (boxes and image scale with it).
    """
    config = anchors if anchors is not None else AnchorConfig()
    matcher = Matcher(pos_iou, neg_iou, allow_low_quality_matches=low_quality_matches)
    coco = _annotations(source)
    cache: dict[tuple[int, int], torch.Tensor] = {}
    rows = []
    for info in coco.images:
        boxes, height, width = _boxes(info, coco.annotations.get(info["id"], []), resize)
        if (height, width) not in cache:
            cache[height, width] = config.anchors(height, width)
        grid = cache[height, width]
        if len(boxes) == 0:
            rows.append((info["id"], 0, len(grid), 0, len(grid), 0))
            continue
        matches = matcher(box_iou(boxes, grid))
        pos = int((matches >= 0).sum())
        neg = int((matches == Matcher.BELOW_LOW_THRESHOLD).sum())
        rows.append((info["id"], len(boxes), len(grid), pos, neg, len(grid) - pos - neg))
    cols = np.array(rows, dtype=np.int64).reshape(-1, 6).T
    return AnchorStats(*cols, config=config)


def class_counts(source: Source) -> dict[str, int]:
    """Category name → number of non-crowd annotations, in category id order (zeros kept)."""
    coco = _annotations(source)
    counts = {c["id"]: 0 for c in coco.categories}
    for anns in coco.annotations.values():
        for a in anns:
            if not a.get("iscrowd", 0):
                counts[a["category_id"]] += 1
    names = {c["id"]: c["name"] for c in coco.categories}
    return {names[c]: n for c, n in counts.items()}


@dataclass(frozen=True)
class SizeHistogram:
    """Object sizes: sqrt(area) in pixels, binned; and COCO's small / medium / large counts.

    Attributes:
        sizes: float64 (M,), sqrt(area) of each non-crowd annotation.
        edges: float64 (B + 1,), bin edges of sqrt(area).
        counts: int64 (B,), annotations per bin.
        coco: {"small": n, "medium": n, "large": n}, by COCO's area ranges.
    """

    sizes: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    coco: dict[str, int]


def object_size_histogram(source: Source, bins: int | np.ndarray | None = None, *,
                          resize: Resize | None = None) -> SizeHistogram:
    """Histogram of object size, sqrt(area), with area the annotation's ``area`` field (COCOeval's
    choice, w·h for the benchmark) or w·h where absent, scaled by ``resize`` if given.

    Args:
        bins: numpy-style bins of sqrt(area); default half-octave bins covering the data.
    """
    coco = _annotations(source)
    areas = []
    for info in coco.images:
        sx = sy = 1.0
        if resize is not None:
            new_h, new_w = resize.output_size(info["height"], info["width"])
            sx, sy = new_w / info["width"], new_h / info["height"]
        for a in coco.annotations.get(info["id"], []):
            if not a.get("iscrowd", 0):
                area = a.get("area", a["bbox"][2] * a["bbox"][3])
                areas.append(area * sx * sy)
    area = np.asarray(areas, dtype=np.float64)
    sizes = np.sqrt(area)
    if bins is None:
        lo = math.floor(2 * math.log2(max(sizes.min(), 1.0))) / 2 if sizes.size else 0.0
        hi = math.ceil(2 * math.log2(max(sizes.max(), 2.0))) / 2 if sizes.size else 1.0
        bins = 2.0 ** np.arange(lo, max(hi, lo + 0.5) + 0.25, 0.5)
    counts, edges = np.histogram(sizes, bins=bins)
    coco_counts = {"small": int((area < COCO_SMALL).sum()),
                   "medium": int(((area >= COCO_SMALL) & (area < COCO_MEDIUM)).sum()),
                   "large": int((area >= COCO_MEDIUM).sum())}
    return SizeHistogram(sizes, edges, counts.astype(np.int64), coco_counts)
