"""Briefly trained detectors, for the chapters that measure one.

The concept chapters measure what a detector's loss sees (the scores of easy negatives, the
gradient-norm histogram, the regression errors, the proposals' IoU). A detector at initialisation
would mislead them, and a full run is too slow for a chapter, so :func:`briefly_trained` trains
one for a short while: a :func:`imbalance.train.fit` run with the ``brief`` preset (the ``tiny``
benchmark, 150 steps, about a minute on a CPU core), kept in the lab's cache
(:func:`imbalance.lab.cache.cache_dir`) and read back by every chapter that asks for the same
settings. :func:`dense_outputs` then collects the per-anchor outputs of a RetinaNet over a few
images (:func:`ohem_choice`: which of them online hard example mining would keep),
:func:`rpn_forward` the first stage of a two-stage detector and :func:`roi_regression` its second
stage's box regression on the RoIs it trains on.

:func:`protocol_trained` instead reads a detector trained to convergence under the protocol (4x,
issue 14's campaign), shipped as a weight file in ``weights/protocol/``
(:mod:`imbalance.train.weights`), with the benchmark it was trained on.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from imbalance.data import CocoDetection, collate
from imbalance.lab.cache import cached_run, fit_cached, use_cached_data
from imbalance.lab.campaign import weights_file
from imbalance.losses import binary_cross_entropy
from imbalance.models.libra_rcnn import proposal_ious
from imbalance.models.retinanet import AnchorOutputs
from imbalance.ohem import OHEM
from imbalance.train import TrainConfig, fit, load_config
from imbalance.train.config import ModelConfig
from imbalance.train.data import ensure_synthetic
from imbalance.train.metrics import loss_terms
from imbalance.train.weights import load_weights

#: The snapshots the chapters read (keyword arguments of :func:`briefly_trained`);
#: ``python -m imbalance.lab`` trains them into the cache before the chapters run.
CHAPTER_SNAPSHOTS: tuple[dict[str, Any], ...] = (
    # the longest first (the two-stage detectors), so two runs side by side finish together
    {"model": "libra_rcnn"},
    # chapter 8: a Faster R-CNN baseline, the second stage's smooth L1 with beta 1
    {"model": "libra_rcnn", "iou_balanced": False, "bfp": False, "balanced_l1": False},
    {"model": "retinanet"},
    # chapter 3: the same RetinaNet trained with cross-entropy (and the prior)
    {"model": "retinanet", "cls_loss": "ce"},
    # chapter 3: and with cross-entropy on OHEM's minibatch (imbalance.ohem, default settings)
    {"model": "retinanet", "cls_loss": "ce", "ohem": {}},
    # chapter 4: the same RetinaNet trained with GHM-C (the authors' per-level wiring)
    {"model": "retinanet", "cls_loss": "ghm_c"},
    # chapter 5: the same RetinaNet with GHM-R for its boxes (the focal loss for classes)
    {"model": "retinanet", "box_loss": "ghm_r"},
    # chapter 1: the first iterations of plain cross-entropy with and without the prior
    {"model": "retinanet", "iterations": 20, "cls_loss": "ce", "prior_prob": None},
    {"model": "retinanet", "iterations": 20, "cls_loss": "ce", "prior_prob": 0.01},
)

#: The detectors trained under the protocol that the chapters read (:func:`protocol_trained`):
#: ``(grid, configuration)`` of :mod:`imbalance.lab.campaign`, shipped in ``weights/protocol/``.
CHAPTER_DETECTORS: tuple[tuple[str, str], ...] = (
    ("retinanet", "FL + SL1"),  # chapter 4: the gradient norms of a converged detector
)

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"name", "options"}
_DATA_FIELDS = {"min_size", "max_size"}


@dataclass
class Snapshot:
    """A trained detector: briefly trained (:func:`briefly_trained`) or trained under the
    protocol and shipped (:func:`protocol_trained`).

    Attributes:
        model: the detector, in eval mode, on the CPU.
        data_root: the benchmark it was trained on (``train`` split; ``val`` unseen): ``tiny``
            for a brief run, ``small`` at 128 px for the protocol's.
        losses: per iteration, the loss terms (floats; empty for a shipped detector).
        config: the training configuration (``brief`` preset and the settings asked for, or
            the protocol's run).
        out: the run folder in the cache (``None`` when trained with ``cache=False`` or shipped).
        provenance: a shipped detector's run (AP, steps, seed, date, commit, command:
            :data:`imbalance.train.weights.PROVENANCE`); ``None`` for a brief run, whose
            ``out/final.json`` has it.
    """

    model: nn.Module
    data_root: Path
    losses: list[dict[str, float]]
    config: TrainConfig
    out: Path | None
    provenance: dict[str, Any] | None = None


def snapshot_config(model: str = "retinanet", iterations: int = 150, *, seed: int = 0,
                    data_seed: int = 0, batch_size: int = 4, lr: float = 0.01,
                    knobs: dict[str, float] | None = None, progress: bool = True,
                    **model_options: Any) -> TrainConfig:
    """The configuration :func:`briefly_trained` trains: the ``brief`` preset and these settings.

    ``model_options`` that are fields of the configuration's ``model`` section (``backbone``,
    ``cls_loss``, ``bfp``...) or of ``data`` (``min_size``, ``max_size``) go there; the others to
    ``model.options`` (e.g. ``prior_prob``, ``rpn_post_nms_top_n_test``). The warm-up is the
    first tenth of the run.
    """
    if iterations < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need iterations >= 0, batch_size >= 1 and lr > 0; got {iterations}, "
                         f"{batch_size}, {lr}")
    sections: dict[str, dict[str, Any]] = {
        "model": {"name": model, "options": {}},
        "data": {"synthetic_seed": data_seed, "batch_size": batch_size, "knobs": dict(knobs or {})},
        "optim": {"lr": lr, "iterations": iterations, "warmup_iters": max(1, iterations // 10)},
        "run": {"seed": seed, "progress": progress},
    }
    for key, value in model_options.items():
        if key in _DATA_FIELDS:
            sections["data"][key] = value
        elif key in _MODEL_FIELDS:
            sections["model"][key] = value
        else:
            sections["model"]["options"][key] = value
    config = load_config({"name": f"brief-{model}", "preset": "brief", **sections})
    return use_cached_data(config)


def briefly_trained(model: str = "retinanet", iterations: int = 150, *, seed: int = 0,
                    data_seed: int = 0, batch_size: int = 4, lr: float = 0.01,
                    knobs: dict[str, float] | None = None, cache: bool = True,
                    progress: bool = True, **model_options: Any) -> Snapshot:
    """A ``model`` (``"retinanet"`` or ``"libra_rcnn"``) trained ``iterations`` steps on ``tiny``.

    The :func:`snapshot_config` run: SGD (momentum 0.9, weight decay 1e-4, linear warm-up over
    the first tenth, gradient clipping at 35 as in the GHM and Libra configs), batches of
    ``batch_size`` train images, ``seed`` for the weights and the data order, ``data_seed`` and
    ``knobs`` for the benchmark (:func:`imbalance.data.make_dataset`). Deterministic for given
    settings on a given machine. With ``cache`` (the default) the run lives in
    ``<cache>/snapshots/`` and is read back, not trained again; a run folder that cannot be read
    back (a killed write, an older package) is trained again.
    """
    config = snapshot_config(model, iterations, seed=seed, data_seed=data_seed,
                             batch_size=batch_size, lr=lr, knobs=knobs, progress=progress,
                             **model_options)
    if not cache:
        with tempfile.TemporaryDirectory(prefix="imbalance-snapshot-") as tmp:
            result = fit(config, out=Path(tmp) / "run")
        out = None
    else:
        out = cached_run("snapshots", model, config)
        result = fit_cached(config, out)
    history = [loss_terms(r) for r in result.metrics if "loss" in r]
    return Snapshot(result.model.cpu().eval(), Path(result.final["data_root"]), history, config,
                    out)


def protocol_trained(grid: str = "retinanet", configuration: str = "FL + SL1", *,
                     progress: bool = True) -> Snapshot:
    """A detector trained under the protocol, read from the weight file the campaign shipped.

    The file (:func:`imbalance.lab.campaign.weights_file`) holds the weights (float16, read back
    as float32), the configuration and the provenance of one seed of the configuration at the
    campaign's schedule; the benchmark it was trained on (``small`` at 128 px) is generated into
    the lab's cache if it is not there (about 20 s). ``losses`` is empty (the learning curve is in
    the kept run's ``metrics.jsonl``) and ``out`` is ``None``.

    Raises:
        FileNotFoundError: no detector of that configuration has been shipped yet.
    """
    path = weights_file(grid, configuration)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the campaign (python -m imbalance.lab."
                                f"campaign run) ships it when it trains {configuration!r}")
    trained = load_weights(path)
    config = use_cached_data(trained.config)
    root = ensure_synthetic(config, progress=progress)
    return Snapshot(trained.model, root, [], config, None, trained.provenance)


class DenseOutputs(NamedTuple):
    """A RetinaNet's outputs on the anchors of a set of images, concatenated over images.

    Attributes:
        logits (Tensor[N, K]): classification logits of the N valid (not ignored) anchors.
        targets (Tensor[N, K]): their one-hot targets (all-zero rows are negatives).
        deltas (Tensor[P, 4]): predicted box offsets of the P positive anchors.
        box_targets (Tensor[P, 4]): their target offsets (the box coder's encoding).
        positives, negatives, ignored (Tensor[I], int64): anchors per image in each role.
    """

    logits: Tensor
    targets: Tensor
    deltas: Tensor
    box_targets: Tensor
    positives: Tensor
    negatives: Tensor
    ignored: Tensor


def _anchor_batches(model: nn.Module, dataset: CocoDetection, num_images: int,
                    batch_size: int, caller: str) -> Iterator[AnchorOutputs]:
    """:meth:`RetinaNet.anchor_outputs` of the first ``num_images`` of ``dataset``, a batch of
    ``batch_size`` images at a time, in order."""
    if not hasattr(model, "anchor_outputs"):
        raise TypeError(f"{caller} needs an imbalance.models.retinanet model")
    num_images = min(num_images, len(dataset))
    for start in range(0, num_images, batch_size):
        images, targets = collate([dataset[i] for i in
                                   range(start, min(start + batch_size, num_images))])
        yield model.anchor_outputs(images, targets)


@torch.no_grad()
def dense_outputs(model: nn.Module, dataset: CocoDetection, num_images: int = 8,
                  batch_size: int = 4) -> DenseOutputs:
    """Collect :meth:`RetinaNet.anchor_outputs` over the first ``num_images`` of ``dataset``."""
    parts: dict[str, list[Tensor]] = {f: [] for f in DenseOutputs._fields}
    for out in _anchor_batches(model, dataset, num_images, batch_size, "dense_outputs"):
        t = out.targets
        parts["logits"].append(out.logits[t.valid])
        parts["targets"].append(t.cls_targets[t.valid])
        parts["deltas"].append(out.deltas[t.positive])
        parts["box_targets"].append(out.box_targets)
        parts["positives"].append(t.positive.sum(1))
        parts["negatives"].append((t.matched == -1).sum(1))
        parts["ignored"].append((~t.valid).sum(1))
    return DenseOutputs(*(torch.cat(parts[f]) for f in DenseOutputs._fields))


@torch.no_grad()
def ohem_choice(model: nn.Module, dataset: CocoDetection, ohem: OHEM | None = None,
                num_images: int = 8, batch_size: int = 4) -> Tensor:
    """Which anchors online hard example mining would train a RetinaNet's classifier on.

    Over the same valid anchors, in the same order, as :func:`dense_outputs` with the same
    ``num_images`` and ``batch_size``: ``Tensor[N]`` bool, True for the anchors of each image's
    OHEM minibatch (:meth:`imbalance.ohem.OHEM.select`, default settings unless ``ohem`` is
    given), ranked by their cross-entropy summed over the K outputs, as the Focal Loss paper
    trains OHEM.
    """
    ohem = ohem or OHEM()
    chosen = []
    for out in _anchor_batches(model, dataset, num_images, batch_size, "ohem_choice"):
        t = out.targets
        ce = binary_cross_entropy(out.logits, t.cls_targets, reduction="none").sum(-1)
        chosen.append(ohem.mask(ce, out.anchors, t.valid, t.positive)[t.valid])
    return torch.cat(chosen)


class Proposals(NamedTuple):
    """A two-stage detector's RPN proposals for one image, with its ground truth.

    Attributes:
        boxes (Tensor[R, 4], float): the proposals (x1, y1, x2, y2) after the RPN's NMS.
        gt_boxes (Tensor[G, 4], float): the image's boxes, in the same (resized) frame.
        gt_labels (Tensor[G], int64): their labels, 1..K.
    """

    boxes: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor


@torch.no_grad()
def rpn_proposals(model: nn.Module, dataset: CocoDetection, num_images: int = 8) -> list[Proposals]:
    """The RPN proposals a Faster R-CNN-style ``model`` makes for the first ``num_images``.

    The model's transform resizes the images and boxes first, as in ``forward``; the proposals
    are those the second stage would see at test time (``rpn_post_nms_top_n_test`` per image),
    before the ground-truth boxes are added in training.
    """
    if not hasattr(model, "rpn"):
        raise TypeError("rpn_proposals needs a two-stage model such as imbalance.models.libra_rcnn")
    return [Proposals(boxes, target["boxes"], target["labels"])
            for _, target, _, boxes in rpn_forward(model, dataset, num_images)]


@torch.no_grad()
def rpn_forward(model: nn.Module, dataset: CocoDetection, num_images: int = 8
                ) -> list[tuple[Any, dict[str, Tensor], dict[str, Tensor], Tensor]]:
    """The first stage of a Faster R-CNN-style ``model`` on the first ``num_images``, in eval
    mode (the model's mode is restored afterwards).

    Returns, per image, ``(images, target, features, proposals)``: the transformed
    ``ImageList`` of that one image, its target resized as the model resizes it, the backbone's
    feature maps and the RPN's proposals (Tensor[R, 4], ``rpn_post_nms_top_n_test`` of them).
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(min(num_images, len(dataset))):
            image, target = dataset[i]
            images_t, targets_t = model.transform([image], [dict(target)])
            features = model.backbone(images_t.tensors)
            boxes, _ = model.rpn(images_t, features)
            out.append((images_t, targets_t[0], features, boxes[0]))
    finally:
        model.train(was_training)
    return out


class RoIRegression(NamedTuple):
    """A two-stage detector's box regression on the positive RoIs its second stage trains on.

    Attributes:
        deltas (Tensor[P, 4]): the predicted offsets of each positive RoI for its ground-truth
            class, in the second stage's box-coder units (torchvision's weights (10, 10, 5, 5)).
        targets (Tensor[P, 4]): the target offsets, the same box coder's encoding of the RoI's
            ground-truth box.
        ious (Tensor[P]): each RoI's IoU with that box (1 for the ground-truth boxes that
            training adds to the proposals).
        per_image (Tensor[I], int64): how many of the P RoIs come from each image.
    """

    deltas: Tensor
    targets: Tensor
    ious: Tensor
    per_image: Tensor


@torch.no_grad()
def roi_regression(model: nn.Module, dataset: CocoDetection, num_images: int = 8,
                   seed: int = 0) -> RoIRegression:
    """The second stage's regression on the positive RoIs of the first ``num_images``.

    Per image: the RPN's proposals (:func:`rpn_forward`), then the model's own
    ``roi_heads.select_training_samples`` (ground-truth boxes added, RoIs sampled as in
    training, with the random draws seeded by ``seed``), then the box head on the positives.
    These are the examples, and the units, of the second stage's box loss. The model's mode and
    the global random state are left as they were.
    """
    heads = getattr(model, "roi_heads", None)
    if heads is None or not hasattr(heads, "select_training_samples"):
        raise TypeError("roi_regression needs a two-stage model such as "
                        "imbalance.models.libra_rcnn")
    parts: dict[str, list[Tensor]] = {f: [] for f in RoIRegression._fields}
    first_stage = rpn_forward(model, dataset, num_images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for images, target, features, proposals in first_stage:
            rois, _, labels, targets = heads.select_training_samples([proposals], [target])
            pos = labels[0] > 0
            rois, labels, targets = rois[0][pos], labels[0][pos], targets[0][pos]
            box_features = heads.box_head(heads.box_roi_pool(features, [rois],
                                                             images.image_sizes))
            _, regression = heads.box_predictor(box_features)
            rows = torch.arange(rois.shape[0])
            parts["deltas"].append(regression.reshape(rois.shape[0], -1, 4)[rows, labels])
            parts["targets"].append(targets)
            parts["ious"].append(proposal_ious(rois, target["boxes"].to(rois.dtype))[0])
            parts["per_image"].append(torch.tensor([rois.shape[0]]))
    return RoIRegression(*(torch.cat(parts[f]) for f in RoIRegression._fields))
