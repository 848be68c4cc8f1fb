"""coco_evaluate equals a hand-run COCOeval; ground truth scores 1; detect() maps back."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from imbalance.data.coco import CocoDetection
from imbalance.data.transforms import Resize, detection_transforms
from imbalance.evaluation import METRICS, bootstrap_ap, coco_evaluate, detect, predict


def ann_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def jittered_detections(path: Path, seed: int = 0) -> list[dict]:
    """Ground truth moved a little, some dropped, some with a wrong class, plus false positives,
    all with random scores."""
    data = json.loads(path.read_text())
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in data["categories"]]
    dets = []
    for a in data["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": cat,
                     "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0),
                              max(h + jitter[3], 1.0)], "score": float(rng.random())})
    for im in data["images"]:
        for _ in range(3):
            w, h = rng.uniform(4, 40, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [float(rng.uniform(0, im["width"] - w)),
                                  float(rng.uniform(0, im["height"] - h)), float(w), float(h)],
                         "score": float(rng.random() * 0.5)})
    return dets


def by_hand(path: Path, dets: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("split", ["train", "val"])
def test_equals_a_hand_run_cocoeval(tiny_root: Path, split: str) -> None:
    path = ann_file(tiny_root, split)
    dets = jittered_detections(path)
    stats = by_hand(path, dets)
    result = coco_evaluate(path, dets, undefined=-1.0)
    assert [result[m] for m in METRICS] == [float(s) for s in stats[:6]]
    assert 0.05 < result["AP"] < 0.95  # a real test: neither empty nor perfect
    default = coco_evaluate(path, dets)  # an undefined metric (COCOeval's -1) is NaN
    assert all(default[m] == float(s) if s > -1 else math.isnan(default[m])
               for m, s in zip(METRICS, stats[:6], strict=True))
    assert all(0.0 <= default[m] <= 1.0 for m in METRICS if not math.isnan(default[m]))


def test_per_class_ap_equals_cocoeval_on_that_class_alone(tiny_root: Path) -> None:
    path = ann_file(tiny_root, "val")
    dets = jittered_detections(path, seed=1)
    result = coco_evaluate(path, dets, undefined=-1.0)
    data = json.loads(path.read_text())
    assert list(result["per_class"]) == [c["name"] for c in data["categories"]]
    for c in data["categories"]:
        assert result["per_class"][c["name"]] == pytest.approx(
            float(by_hand(path, dets, [c["id"]])[0]), abs=1e-12)


def test_a_coco_object_gives_the_same_result(tiny_root: Path) -> None:
    path = ann_file(tiny_root, "val")
    dets = jittered_detections(path, seed=2)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    assert coco_evaluate(gt, dets) == coco_evaluate(path, dets)


@pytest.mark.parametrize("split", ["train", "val"])
def test_ground_truth_as_detections_scores_one(tiny_root: Path, split: str) -> None:
    path = ann_file(tiny_root, split)
    data = json.loads(path.read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in data["annotations"]]
    result = coco_evaluate(path, dets, undefined=float("nan"))
    assert result["AP"] == result["AP50"] == result["AP75"] == 1.0
    areas = np.array([a["area"] for a in data["annotations"]])
    for metric, present in (("APs", (areas <= 32**2).any()), ("APl", (areas >= 96**2).any())):
        assert result[metric] == 1.0 if present else math.isnan(result[metric])
    counts = {c["name"]: sum(a["category_id"] == c["id"] for a in data["annotations"])
              for c in data["categories"]}
    for name, ap in result["per_class"].items():
        assert ap == 1.0 if counts[name] else math.isnan(ap)


def test_empty_detections_give_zeros(tiny_root: Path) -> None:
    result = coco_evaluate(ann_file(tiny_root, "val"), [])
    assert all(result[m] == 0.0 or math.isnan(result[m]) for m in METRICS)
    assert result["AP"] == 0.0
    assert set(result["per_class"].values()) == {0.0}


def test_bad_detections_are_named(tiny_root: Path) -> None:
    path = ann_file(tiny_root, "val")
    good = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}
    with pytest.raises(ValueError, match="image_id 999"):
        coco_evaluate(path, [good, {**good, "image_id": 999}])
    with pytest.raises(ValueError, match="category_id 42"):
        coco_evaluate(path, [{**good, "category_id": 42}])
    with pytest.raises(ValueError, match="lacks"):
        coco_evaluate(path, [{"image_id": 1}])
    # issue 13, item 6: COCOeval ranks a NaN score last (AP 1.0 instead of 0.933) and takes
    # negative widths and NaN coordinates without a word
    with pytest.raises(ValueError, match="score nan"):
        coco_evaluate(path, [good, {**good, "score": float("nan")}])
    for bbox in ([1, 1, -5, 5], [1, float("nan"), 5, 5], [1, 1, 5, float("inf")]):
        with pytest.raises(ValueError, match="finite"):
            coco_evaluate(path, [{**good, "bbox": bbox}])


def test_an_undefined_metric_is_nan_not_zero(tiny_root: Path) -> None:
    """Issue 13, item 6: COCOeval's -1 (no ground truth of that size) read as 0.0."""
    path = ann_file(tiny_root, "val")
    data = json.loads(path.read_text())
    assert not any(a["area"] >= 96 ** 2 for a in data["annotations"])  # no large object
    result = coco_evaluate(path, jittered_detections(path))
    assert math.isnan(result["APl"]) and result["AP"] > 0
    from imbalance.files import json_text
    assert json.loads(json_text(result))["APl"] is None


class GroundTruthModel(torch.nn.Module):
    """Returns each image's ground truth, scaled to the image it is given, as its predictions."""

    def __init__(self, dataset: CocoDetection) -> None:
        super().__init__()
        self.dataset, self.next = dataset, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training
        outputs = []
        for image in images:
            target = self.dataset.target(self.next)
            self.next += 1
            h0, w0 = target["orig_size"].tolist()
            scale = torch.tensor([image.shape[-1] / w0, image.shape[-2] / h0] * 2)
            outputs.append({"boxes": target["boxes"] * scale, "labels": target["labels"],
                            "scores": torch.linspace(1.0, 0.5, len(target["labels"]))})
        return outputs


def test_detect_maps_boxes_and_labels_back(tiny_root: Path) -> None:
    dataset = CocoDetection(tiny_root, "val", transforms=detection_transforms(
        False, min_size=300, max_size=1000))
    model = GroundTruthModel(dataset).train()
    dets = detect(model, dataset, batch_size=3, progress=False)
    assert model.training  # mode restored
    assert len(dets) == sum(len(dataset.target(i)["labels"]) for i in range(len(dataset)))
    assert {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    result = coco_evaluate(dataset.annotation_file, dets)
    assert result["AP"] == 1.0
    model.next = 0
    assert len(detect(model, dataset, score_threshold=0.9, progress=False)) < len(dets)


def test_detect_runs_a_torchvision_detector(tiny_root: Path) -> None:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    dataset = CocoDetection(tiny_root, "val", transforms=Resize(96))
    subset = torch.utils.data.Subset(dataset, [0, 1])
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=dataset.num_classes + 1)
    dets = detect(model, subset, batch_size=2, progress=False)
    assert all(d["image_id"] in dataset.ids[:2] for d in dets)
    assert all(d["category_id"] in dataset.label_to_cat_id.values() for d in dets)
    result = coco_evaluate(dataset.annotation_file, dets)
    assert all(0.0 <= result[m] <= 1.0 or math.isnan(result[m]) for m in METRICS)
    assert 0.0 <= result["AP"] <= 1.0


def test_predict_returns_images_targets_and_thresholded_predictions_on_the_cpu() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen_training: list[bool] = []

        def forward(self, images):
            self.seen_training.append(self.training)
            return [{"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]) + im.mean(),
                     "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.2])}
                    for im in images]

    data = [(torch.full((3, 8, 8), float(i)), {"image_id": i}) for i in range(4)]
    model = Fixed().train()
    out = predict(model, data, [3, 1], score_threshold=0.5)
    assert model.training and model.seen_training == [False, False]
    assert [t["image_id"] for _, t, _ in out] == [3, 1]
    image, _, pred = out[0]
    assert image.shape == (3, 8, 8) and pred["labels"].tolist() == [1]
    assert pred["boxes"].tolist() == [[3.0, 3.0, 7.0, 7.0]] and pred["scores"].device.type == "cpu"


@pytest.mark.parametrize("split", ["train", "val"])
def test_the_bootstrap_reaccumulates_cocoeval_exactly(tiny_root: Path, split: str) -> None:
    """Re-accumulating COCOeval's per-image matches over every image once gives its AP; over
    resampled images the AP spreads, reproducibly for a seed."""
    path = ann_file(tiny_root, split)
    dets = jittered_detections(path)
    ap = coco_evaluate(path, dets)["AP"]
    b = bootstrap_ap(path, dets, 50, seed=3)
    assert b["AP"] == pytest.approx(ap, abs=1e-12)
    assert b["resamples"] == 50 and b["std"] > 0 and b["low"] < ap < b["high"]
    assert bootstrap_ap(path, dets, 50, seed=3) == b
    assert bootstrap_ap(path, dets, 50, seed=4) != b


def test_the_bootstrap_refuses_bad_input(tiny_root: Path) -> None:
    path = ann_file(tiny_root, "val")
    dets = jittered_detections(path)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ap(path, dets, 1)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ap(path, dets, 10, level=1.5)
    with pytest.raises(ValueError, match="none"):
        bootstrap_ap(path, [], 10)
