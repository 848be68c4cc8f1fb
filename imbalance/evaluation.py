"""COCO evaluation: ``pycocotools``' COCOeval, quietly, as a dict; and a model → detections helper.

:func:`coco_evaluate` gives exactly what ``COCOeval`` gives run by hand (``stats[0:6]``). Where
COCOeval reports -1, "undefined" (no ground truth in that area range or class), the dict holds
``undefined``: NaN by default, so an undefined metric neither reads as a failure nor averages as
a zero (JSON files store it as ``null``; tables show "—"). :func:`bootstrap_ap` measures the
evaluation noise of AP by resampling the validation images.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from tqdm.auto import tqdm

from imbalance.data.coco import collate

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

Detection = dict[str, Any]


def load_coco_api(gt: str | os.PathLike | COCO) -> COCO:
    """A pycocotools ``COCO`` object for an annotation file, loaded without its prints."""
    if isinstance(gt, COCO):
        return gt
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(gt))


def _check(detections: Sequence[Detection], coco: COCO) -> list[Detection]:
    """Copies of the detections with plain-float boxes; clear errors for what COCOeval would
    choke on or silently drop."""
    images, cats = set(coco.getImgIds()), set(coco.getCatIds())
    out = []
    for i, d in enumerate(detections):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise ValueError(f"detection {i} lacks {missing}: {d!r}")
        if d["image_id"] not in images:
            raise ValueError(f"detection {i} has image_id {d['image_id']}, not in the ground truth")
        if d["category_id"] not in cats:
            raise ValueError(f"detection {i} has category_id {d['category_id']}, not among the "
                             f"categories {sorted(cats)}")
        bbox = [float(v) for v in d["bbox"]]
        if len(bbox) != 4:
            raise ValueError(f"detection {i} has bbox {d['bbox']!r}; expected [x, y, w, h]")
        if not all(math.isfinite(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"detection {i} has bbox {d['bbox']!r}; expected finite [x, y, w, h] "
                             f"with w, h >= 0")
        score = float(d["score"])
        if not math.isfinite(score):  # COCOeval would rank a NaN score last, silently
            raise ValueError(f"detection {i} has score {d['score']!r}; expected a finite number")
        out.append({"image_id": int(d["image_id"]), "category_id": int(d["category_id"]),
                    "bbox": bbox, "score": score})
    return out


def _value(x: float, undefined: float) -> float:
    return float(x) if x > -1 else float(undefined)


def coco_evaluate(gt: str | os.PathLike | COCO, detections: Sequence[Detection],
                  iou_type: str = "bbox", *, undefined: float = float("nan")) -> dict[str, Any]:
    """COCO box AP of ``detections`` against ``gt``, as COCOeval computes it.

    Args:
        gt: an annotation file or a pycocotools ``COCO`` object.
        detections: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts.
        iou_type: ``"bbox"`` (the only type the benchmark has boxes for).
        undefined: the value reported where COCOeval gives -1 (no ground truth to score).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` → float, COCOeval's ``stats[0:6]``, and
        ``"per_class"``: category name → AP at IoU 0.50:0.95, all areas, 100 detections per
        image, the mean of ``eval["precision"][:, :, k, 0, -1]`` over its defined entries. An
        empty detection list scores 0 (and ``undefined`` where undefined), without running
        COCOeval.
    """
    if iou_type != "bbox":
        raise ValueError(f"iou_type={iou_type!r}: only 'bbox' is supported")
    coco = load_coco_api(gt)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    dets = _check(detections, coco)
    if not dets:
        has = _ground_truth_presence(coco)
        result = {m: (0.0 if has[m] else float(undefined)) for m in METRICS}
        result["per_class"] = {names[c]: (0.0 if coco.getAnnIds(catIds=[c], iscrowd=False)
                                          else float(undefined)) for c in sorted(names)}
        return result
    with contextlib.redirect_stdout(io.StringIO()):
        results = coco.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(coco, results, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[:6]
    result: dict[str, Any] = {m: _value(v, undefined) for m, v in zip(METRICS, stats, strict=True)}
    precision = evaluator.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M maxDets)
    per_class = {}
    for k, cat in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat]] = float(np.mean(p)) if p.size else float(undefined)
    result["per_class"] = per_class
    return result


def _ap_of_images(evaluator: COCOeval, images: np.ndarray) -> float:
    """AP (IoU 0.50:0.95, all areas, the last ``maxDets``) of the evaluated images at positions
    ``images`` of ``params.imgIds``, repeats counting again: COCOeval's ``accumulate`` on a
    resampled validation set, from the per-image matches ``evaluate`` made once."""
    p = evaluator.params
    n_img, n_area, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    precision = []
    for k in range(len(p.catIds)):
        found = [evaluator.evalImgs[k * n_area * n_img + i] for i in images]
        found = [e for e in found if e is not None]
        if not found:
            continue
        gt_ignore = np.concatenate([e["gtIgnore"] for e in found])
        npig = np.count_nonzero(gt_ignore == 0)
        if npig == 0:
            continue
        scores = np.concatenate([e["dtScores"][:max_det] for e in found])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e["dtMatches"][:, :max_det] for e in found], axis=1)[:, order]
        ignored = np.concatenate([e["dtIgnore"][:, :max_det] for e in found], axis=1)[:, order]
        tp = np.cumsum(np.logical_and(matched, ~ignored), axis=1, dtype=np.float64)
        fp = np.cumsum(np.logical_and(~matched.astype(bool), ~ignored), axis=1,
                       dtype=np.float64)
        for t in range(len(p.iouThrs)):
            recall = tp[t] / npig
            prec = tp[t] / (tp[t] + fp[t] + np.spacing(1))
            prec = np.maximum.accumulate(prec[::-1])[::-1]  # COCOeval's monotone envelope
            at = np.searchsorted(recall, p.recThrs, side="left")
            q = np.zeros(len(p.recThrs))
            inside = at < len(prec)
            q[inside] = prec[at[inside]]
            precision.append(q)
    return float(np.mean(precision)) if precision else float("nan")


def bootstrap_ap(gt: str | os.PathLike | COCO, detections: Sequence[Detection],
                 resamples: int = 200, *, seed: int = 0,
                 level: float = 0.95) -> dict[str, float]:
    """The evaluation noise of AP: COCO AP (IoU 0.50:0.95) over ``resamples`` validation sets
    drawn from the images with replacement (the detector fixed).

    COCOeval matches detections to ground truth once per image; each resample re-accumulates
    those matches over its images (:func:`_ap_of_images`, equal to COCOeval's AP on the
    original set). Returns ``AP`` (of the original set), ``std`` (over the resamples), ``low``
    and ``high`` (the percentile interval of ``level``) and ``resamples``.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 2:
        raise ValueError(f"resamples must be an int >= 2, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    coco = load_coco_api(gt)
    dets = _check(detections, coco)
    if not dets:
        raise ValueError("bootstrap_ap needs detections; there are none")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
    n = len(evaluator.params.imgIds)
    rng = np.random.default_rng(seed)
    values = np.array([_ap_of_images(evaluator, rng.integers(0, n, n))
                       for _ in range(resamples)])
    values = values[np.isfinite(values)]
    tail = 100 * (1 - level) / 2
    return {"AP": _ap_of_images(evaluator, np.arange(n)), "std": float(np.std(values, ddof=1)),
            "low": float(np.percentile(values, tail)),
            "high": float(np.percentile(values, 100 - tail)), "resamples": int(values.size)}


def ap_from_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """A :func:`coco_evaluate` dict read back from JSON, where an undefined metric is ``null``:
    ``None`` becomes NaN again (metrics and ``per_class``); other entries are kept."""
    out = dict(result)
    for m in METRICS:
        if m in out and out[m] is None:
            out[m] = float("nan")
    if isinstance(out.get("per_class"), Mapping):
        out["per_class"] = {k: float("nan") if v is None else v
                            for k, v in out["per_class"].items()}
    return out


def _ground_truth_presence(coco: COCO) -> dict[str, bool]:
    """Whether each metric has ground truth to score (COCOeval's area ranges, inclusive)."""
    areas = np.array([a["area"] for a in coco.dataset.get("annotations", [])
                      if not a.get("iscrowd", 0)], dtype=np.float64)
    small = bool(((areas >= 0) & (areas <= 32**2)).any())
    medium = bool(((areas >= 32**2) & (areas <= 96**2)).any())
    large = bool((areas >= 96**2).any())
    anyone = bool(areas.size)
    return {"AP": anyone, "AP50": anyone, "AP75": anyone, "APs": small, "APm": medium,
            "APl": large}


def _find(dataset: Any, name: str) -> Any:
    """Attribute ``name`` of a dataset or of the dataset a Subset wraps."""
    while dataset is not None:
        if hasattr(dataset, name):
            return getattr(dataset, name)
        dataset = getattr(dataset, "dataset", None)
    return None


@torch.inference_mode()
def detect(model: nn.Module, dataset: torch.utils.data.Dataset, *,
           device: str | torch.device | None = None, batch_size: int = 4,
           score_threshold: float = 0.0, num_workers: int = 0, progress: bool = True,
           label_to_category: Mapping[int, int] | None = None) -> list[Detection]:
    """Run a torchvision-style detection model over a dataset; detections in COCO form.

    The model is run in eval mode (its mode is restored afterwards) on batches from
    :func:`~imbalance.data.coco.collate`; it returns, per image, ``boxes`` (N, 4) xyxy in the
    input tensor's pixels, ``labels`` (N,) and ``scores`` (N,). Boxes are scaled back to the
    original image by the target's ``orig_size`` (so a resizing transform is undone; a flipping
    one is not: evaluate without flips) and converted to [x, y, w, h]; labels are mapped back to
    COCO category ids by ``label_to_category``, or the dataset's ``label_to_cat_id``.

    Args:
        model: takes a list of float tensors (3, H, W) and returns a list of dicts, in eval mode.
        dataset: yields ``(image, target)`` with ``image_id`` (and ``orig_size``) in the target.
        device: where to run; default the model's device.
        batch_size, num_workers: of the DataLoader.
        score_threshold: detections scoring below it are dropped.
        progress: show a tqdm progress bar.
    """
    mapping = label_to_category if label_to_category is not None else _find(dataset,
                                                                             "label_to_cat_id")
    if mapping is None:
        raise ValueError("no label → category mapping: pass label_to_category")
    if device is None:
        device = _model_device(model)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    detections: list[Detection] = []
    try:
        for images, targets in tqdm(loader, desc="detect", unit="batch", disable=not progress):
            outputs = model([im.to(device) for im in images])
            for image, target, out in zip(images, targets, outputs, strict=True):
                detections.extend(_to_coco(image, target, out, mapping, score_threshold))
    finally:
        model.train(was_training)
    return detections


def _model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, dataset: torch.utils.data.Dataset, indices: Iterable[int], *,
            score_threshold: float = 0.0) -> list[tuple[torch.Tensor, dict[str, Any],
                                                       dict[str, torch.Tensor]]]:
    """A detector's raw predictions on a few images, for looking at them.

    Returns, per index, ``(image, target, prediction)``: the dataset's image (3, H, W) and
    target, and the model's ``boxes`` (N, 4) xyxy in that image's pixels, ``labels`` (N,) and
    ``scores`` (N,), on the CPU, keeping scores of at least ``score_threshold``. The model runs
    in eval mode on its own device; its mode is restored afterwards.
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for index in indices:
            image, target = dataset[index]
            pred = model([image.to(device)])[0]
            keep = pred["scores"] >= score_threshold
            out.append((image, target, {k: v[keep].detach().cpu() for k, v in pred.items()}))
    finally:
        model.train(was_training)
    return out


def _to_coco(image: torch.Tensor, target: Mapping[str, Any], output: Mapping[str, torch.Tensor],
             mapping: Mapping[int, int], score_threshold: float) -> Iterable[Detection]:
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu()
    labels = output["labels"].detach().cpu()
    if "orig_size" in target:
        h0, w0 = (int(v) for v in target["orig_size"])
        h, w = image.shape[-2:]
        boxes = boxes * torch.tensor([w0 / w, h0 / h, w0 / w, h0 / h])
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    boxes[:, 2:] -= boxes[:, :2]
    image_id = target["image_id"]
    image_id = int(image_id.item() if isinstance(image_id, torch.Tensor) else image_id)
    for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
        yield {"image_id": image_id, "category_id": int(mapping[int(label)]), "bbox": box,
               "score": float(score)}
