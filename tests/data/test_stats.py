"""Dataset statistics: anchors by role (checked against a brute-force rule), classes, sizes."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from imbalance.data.coco import CocoDetection
from imbalance.data.stats import (
    AnchorConfig,
    anchor_statistics,
    class_counts,
    object_size_histogram,
)
from imbalance.data.transforms import Resize


def coco_file(tmp_path: Path, boxes_per_image: list[list[list[float]]], size: int = 64,
              categories: int = 2, name: str = "instances.json") -> Path:
    data = {"images": [], "annotations": [],
            "categories": [{"id": k + 1, "name": f"c{k + 1}"} for k in range(categories)]}
    for i, boxes in enumerate(boxes_per_image):
        data["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": size,
                               "height": size})
        for box in boxes:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": 1, "bbox": box, "iscrowd": 0,
                                        "area": box[2] * box[3]})
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def brute_force_roles(boxes: np.ndarray, anchors: np.ndarray) -> tuple[int, int, int]:
    """RetinaNet's rule written out: positive if best IoU ≥ 0.5 or among a box's best anchors,
    negative if best IoU < 0.4 (and not positive), ignored otherwise."""
    if len(boxes) == 0:
        return 0, len(anchors), 0
    lt = np.maximum(boxes[:, None, :2], anchors[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], anchors[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(boxes)[:, None] + area(anchors)[None, :] - inter)
    best = iou.max(axis=0)
    positive = best >= 0.5
    positive |= (iou == iou.max(axis=1, keepdims=True)).any(axis=0)
    negative = (best < 0.4) & ~positive
    return int(positive.sum()), int(negative.sum()), int((~positive & ~negative).sum())


def test_roles_match_a_brute_force_count(tiny_root: Path) -> None:
    path = tiny_root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    config = AnchorConfig()
    stats = anchor_statistics(path, config)
    anchors = config.anchors(128, 128).double().numpy()
    for i, im in enumerate(data["images"]):
        boxes = np.array([[x, y, x + w, y + h] for a in data["annotations"]
                          if a["image_id"] == im["id"] for x, y, w, h in [a["bbox"]]],
                         dtype=np.float64).reshape(-1, 4)
        expected = brute_force_roles(boxes, anchors)
        got = (stats.positives[i], stats.negatives[i], stats.ignored[i])
        assert got == expected, im
        assert stats.objects[i] == len(boxes) and stats.anchors[i] == len(anchors)
    assert stats.fg_bg_ratio == stats.positives.sum() / stats.negatives.sum()
    assert stats.summary()["images"] == len(data["images"])
    assert "fg:bg = 1:" in str(stats)


def test_anchor_layout_follows_retinanet() -> None:
    full = AnchorConfig.retinanet()
    assert full.sizes == (32, 64, 128, 256, 512) and full.strides == (8, 16, 32, 64, 128)
    assert AnchorConfig() == AnchorConfig.retinanet(0.5)
    config = AnchorConfig()
    anchors = config.anchors(128, 128)
    assert len(anchors) == 9 * sum((128 // s) ** 2 for s in config.strides)
    first = anchors[: 9]  # level 0, the location (0, 0)
    wh = (first[:, 2:] - first[:, :2]).numpy()
    assert np.allclose(np.sqrt(wh.prod(axis=1)).reshape(3, 3),
                       [16 * np.array(config.scales)] * 3, rtol=0.1)
    ratios = (wh[:, 1] / wh[:, 0]).reshape(3, 3)  # torchvision's order: ratio, then scale
    assert np.allclose(ratios, np.array(config.aspect_ratios)[:, None].repeat(3, 1), rtol=0.15)
    # a 100 px image is padded to a multiple of the largest stride, as torchvision pads it
    assert len(config.anchors(100, 100)) == len(anchors)
    with pytest.raises(ValueError):
        AnchorConfig(sizes=(16, 32), strides=(4,))


def test_each_box_gets_its_best_anchor_with_low_quality_matches(tmp_path: Path) -> None:
    tiny = coco_file(tmp_path, [[[30, 30, 4, 4]]])  # IoU below 0.4 with every anchor
    with_lq = anchor_statistics(tiny)
    without = anchor_statistics(tiny, low_quality_matches=False)
    assert with_lq.positives[0] >= 1 and without.positives[0] == 0
    # a box equal to the level-0 anchor at (32, 32)
    exact = coco_file(tmp_path, [[[24, 24, 16, 16]]], name="exact.json")
    stats = anchor_statistics(exact)
    assert stats.positives[0] >= 1
    assert stats.positives[0] + stats.negatives[0] + stats.ignored[0] == stats.anchors[0]


def test_images_without_boxes_have_only_negatives(tmp_path: Path) -> None:
    stats = anchor_statistics(coco_file(tmp_path, [[], [[10, 10, 20, 20]]]))
    assert stats.positives[0] == 0 and stats.ignored[0] == 0
    assert stats.negatives[0] == stats.anchors[0]
    assert stats.positives[1] > 0


def test_resize_scales_boxes_and_images(tmp_path: Path) -> None:
    small = coco_file(tmp_path, [[[10, 12, 20, 16], [30, 4, 8, 8]]], size=64, name="small.json")
    big = coco_file(tmp_path, [[[20, 24, 40, 32], [60, 8, 16, 16]]], size=128)
    resized = anchor_statistics(small, resize=Resize(128))
    direct = anchor_statistics(big)
    for field in ("positives", "negatives", "ignored", "anchors"):
        assert np.array_equal(getattr(resized, field), getattr(direct, field)), field
    assert np.allclose(object_size_histogram(small, resize=Resize(128)).sizes,
                       object_size_histogram(big).sizes)


def test_sources_agree(tiny_root: Path) -> None:
    path = tiny_root / "annotations" / "instances_train.json"
    from pycocotools.coco import COCO

    a = anchor_statistics(path)
    b = anchor_statistics(CocoDetection(tiny_root, "train"))
    c = anchor_statistics(COCO(str(path)))
    assert np.array_equal(a.positives, b.positives) and np.array_equal(a.positives, c.positives)
    assert class_counts(path) == class_counts(COCO(str(path)))


def test_class_counts_count_every_category(tiny_root: Path, tmp_path: Path) -> None:
    path = tiny_root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    expected = Counter(names[a["category_id"]] for a in data["annotations"])
    counts = class_counts(path)
    assert list(counts) == [names[k] for k in sorted(names)]
    assert counts == {n: expected.get(n, 0) for n in counts}
    assert class_counts(coco_file(tmp_path, [[[1, 1, 5, 5]]], categories=3)) == {
        "c1": 1, "c2": 0, "c3": 0}


def test_object_sizes(tiny_root: Path) -> None:
    path = tiny_root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    hist = object_size_histogram(path)
    n = len(data["annotations"])
    assert hist.counts.sum() == n and sum(hist.coco.values()) == n
    assert np.allclose(np.sort(hist.sizes),
                       np.sort([math.sqrt(a["bbox"][2] * a["bbox"][3])
                                for a in data["annotations"]]))
    areas = np.array([a["area"] for a in data["annotations"]])
    assert hist.coco["small"] == (areas < 32**2).sum()
    assert hist.coco["large"] == (areas >= 96**2).sum()
    assert np.all(np.diff(hist.edges) > 0)
    assert object_size_histogram(path, bins=np.array([0, 16, 1e9])).counts.sum() == n
