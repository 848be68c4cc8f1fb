"""RetinaNet with the book's losses: torchvision's detector, our loss seam.

Everything but the loss is torchvision's :class:`~torchvision.models.detection.RetinaNet`: the
anchor generator, the matcher (IoU >= 0.5 positive, < 0.4 negative, in between ignored, plus each
box's best anchors), the box coder, the image transform and the post-processing. What is ours:

* :class:`ClassificationLoss` (``ce``, ``alpha_ce``, ``focal``, ``ghm_c``) and :class:`BoxLoss`
  (``l1``, ``smooth_l1``, ``asl1``, ``ghm_r``, ``balanced_l1``, ``giou``), applied by
  :class:`RetinaNetHead` to the anchors of the whole batch (GHM per pyramid level by default,
  see below);
* online hard example mining (``ohem``, :mod:`imbalance.ohem`), the Focal Loss paper's
  baseline: the classification loss on each image's hard minibatch only;
* the classifier has K outputs (one sigmoid per object class, as in the paper) rather than
  torchvision's K + 1, and detections are labelled 1..K;
* the backbone is trained from scratch (:func:`~imbalance.models.backbones.resnet_fpn`), and the
  anchors default to half RetinaNet's scale (levels P2..P6), like
  :class:`imbalance.data.AnchorConfig`, because the benchmark's objects are small.

**Normalisation.** Following the papers, a loss is summed over the batch and divided by the
number of positive anchors in the batch (at least 1). torchvision instead divides each image's
sum by its own positives and averages the images. Under DistributedDataParallel the positive
count is averaged over the processes (as mmdetection does), so the gradient is that of the global
batch. The GHM histograms, though, stay per process: with W processes each harmonises its own
share of the batch. GHM-C and GHM-R normalise themselves (their
harmonised weights sum to the number of valid elements) and ignore the positive count, as the
authors' code does.

**GHM histograms** (``ghm_scope``). ``"level"`` (default) wires GHM-C and GHM-R as the
authors' RetinaNet head does: the loss is called once per pyramid level, on the valid anchors of
every image of the batch at that level, by one shared module whose running counts (EMA) therefore
advance once per level call, five times an iteration; the five self-normalised level losses are
summed (loss weights 1 and 10, the released config). A level has its own histogram, but the
shared EMA mixes the levels' counts, so a level's weights also depend on the levels called
before it. ``"batch"`` calls each GHM loss once per iteration over the valid anchors of the whole
pyramid: one histogram, the EMA advanced once, which is what the paper's equations describe.
The other losses are sums divided by the positive count, the same under either scope.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import retinanet as tv_retinanet
from torchvision.ops import boxes as box_ops
from torchvision.ops import generalized_box_iou_loss

from imbalance.data.stats import AnchorConfig
from imbalance.losses import (
    GHMC,
    GHMR,
    alpha_balanced_bce,
    asl1_loss,
    balanced_l1_b,
    balanced_l1_loss,
    binary_cross_entropy,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
from imbalance.losses.ghm import GHMC_TOP_EDGE, bin_index, harmonising_weights
from imbalance.losses.ghm_r import GHMR_TOP_EDGE, ghm_r_gradient_norm
from imbalance.models.backbones import norm_layer, resnet_fpn
from imbalance.models.loss_defaults import signature_defaults
from imbalance.ohem import OHEM

CLS_LOSSES: tuple[str, ...] = ("ce", "alpha_ce", "focal", "ghm_c")
BOX_LOSSES: tuple[str, ...] = ("l1", "smooth_l1", "asl1", "ghm_r", "balanced_l1", "giou")
GHM_SCOPES: tuple[str, ...] = ("level", "batch")

# Each loss parameter's default is the loss function's own (models.loss_defaults); the numbers
# written here are where the released configs differ: the Focal Loss paper's best alpha for
# alpha-balanced CE (0.75, Table 1a), RetinaNet's smooth L1 beta 0.11 (mmdetection's retinanet
# config; also Libra RetinaNet's Balanced L1 beta), GHM-R's loss weight 10 (the GHM config).
CLS_DEFAULTS: dict[str, dict[str, float]] = {
    "ce": {"loss_weight": 1.0},
    "alpha_ce": {"alpha": 0.75, "loss_weight": 1.0},
    "focal": {**signature_defaults(sigmoid_focal_loss, "alpha", "gamma"), "loss_weight": 1.0},
    "ghm_c": {**signature_defaults(GHMC, "bins", "momentum"), "loss_weight": 1.0},
}
BOX_DEFAULTS: dict[str, dict[str, float]] = {
    "l1": {"loss_weight": 1.0},
    "smooth_l1": {"beta": 0.11, "loss_weight": 1.0},
    "asl1": {**signature_defaults(asl1_loss, "mu"), "loss_weight": 1.0},
    "ghm_r": {**signature_defaults(GHMR, "mu", "bins", "momentum"), "loss_weight": 10.0},
    "balanced_l1": {**signature_defaults(balanced_l1_loss, "alpha", "gamma"), "beta": 0.11,
                    "loss_weight": 1.0},
    "giou": {"loss_weight": 1.0},
}


def _options(kind: str, name: str, defaults: Mapping[str, Mapping[str, float]],
             given: Mapping[str, Any] | None) -> dict[str, Any]:
    if name not in defaults:
        raise ValueError(f"unknown {kind} loss {name!r}; expected one of {tuple(defaults)}")
    options = dict(defaults[name])
    unknown = sorted(set(given or {}) - set(options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {kind} loss {name!r}; "
                         f"it takes {sorted(options)}")
    options.update(given or {})
    return options


class GHMStats:
    """What a GHM loss did in the calls since the last :meth:`read` (one iteration): the mean
    number of non-empty bins per call and, for GHM-C, the share of the gradient norm that falls
    on the positives' elements (``Σ_pos w·g / Σ w·g`` per call, summed over the calls with each
    call's normalisation, as the gradients add up)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the calls so far."""
        self.calls = 0
        self.bins: Tensor | float = 0.0
        self.positive: Tensor | float = 0.0
        self.total: Tensor | float = 0.0

    def add(self, g: Tensor, positive: Tensor | None, module: nn.Module, acc_before: Tensor,
            top: float) -> None:
        """One call: ``g`` the gradient norms of its valid elements, ``positive`` a bool mask of
        the positives' elements (``None``: no share), ``module`` the GHM module and
        ``acc_before`` its running counts before the call (the weights are recomputed from
        them exactly)."""
        counts = torch.bincount(bin_index(g, module.bins, top).flatten(), minlength=module.bins)
        self.calls += 1
        self.bins = self.bins + (counts > 0).sum()
        if positive is not None:
            m = module.momentum if module.training else 0.0
            valid = torch.ones_like(g, dtype=torch.bool)
            w = harmonising_weights(g, valid, module.bins, top, acc_before, m)
            grad = w * g / max(g.numel(), 1)
            self.positive = self.positive + grad[positive].sum()
            self.total = self.total + grad.sum()

    def read(self, prefix: str) -> dict[str, float]:
        """The iteration's statistics, named ``<prefix>_bins`` and ``<prefix>_positive_grad``;
        then start over. Empty if the loss was not called."""
        if self.calls == 0:
            return {}
        out = {f"{prefix}_bins": float(self.bins) / self.calls}
        if float(self.total) > 0:
            out[f"{prefix}_positive_grad"] = float(self.positive) / float(self.total)
        self.reset()
        return out


class ClassificationLoss(nn.Module):
    """The classification loss of a dense detector, over the valid anchors of a batch.

    ``forward(logits, targets, num_pos)``: ``logits`` and ``targets`` are ``Tensor[N, K]`` (float,
    one-hot rows; all-zero rows for negatives) over the N valid anchors, ``num_pos`` a float
    scalar tensor (number of positive anchors, at least 1). Returns a scalar:

    * ``ce``, ``alpha_ce``, ``focal``: ``loss_weight * sum / num_pos`` of
      :func:`~imbalance.losses.binary_cross_entropy`, :func:`~imbalance.losses.alpha_balanced_bce`
      or :func:`~imbalance.losses.sigmoid_focal_loss`;
    * ``ghm_c``: ``loss_weight *`` :class:`~imbalance.losses.GHMC` (its own normalisation; the
      module keeps the running histogram, a buffer saved with the model).

    Options (``alpha``, ``gamma``, ``bins``, ``momentum``, ``loss_weight``) default to
    :data:`CLS_DEFAULTS`.
    """

    def __init__(self, name: str = "focal", **options: Any) -> None:
        super().__init__()
        self.name = name
        self.options = _options("classification", name, CLS_DEFAULTS, options)
        self.loss_weight = float(self.options["loss_weight"])
        self.ghm = (GHMC(int(self.options["bins"]), float(self.options["momentum"]))
                    if name == "ghm_c" else None)
        self.stats = GHMStats()

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The loss of every element, without ``loss_weight`` or normalisation (``Tensor`` of the
        logits' shape): what online hard example mining ranks anchors by. Not for ``ghm_c``,
        whose weights depend on the whole batch."""
        o = self.options
        if self.name == "ce":
            return binary_cross_entropy(logits, targets, reduction="none")
        if self.name == "alpha_ce":
            return alpha_balanced_bce(logits, targets, alpha=o["alpha"], reduction="none")
        if self.name == "focal":
            return sigmoid_focal_loss(logits, targets, alpha=o["alpha"], gamma=o["gamma"],
                                      reduction="none")
        raise ValueError(f"{self.name!r} has no element-wise loss")

    def forward(self, logits: Tensor, targets: Tensor, num_pos: Tensor) -> Tensor:
        o = self.options
        if self.ghm is not None:
            before = self.ghm.acc_sum.clone()
            loss = self.loss_weight * self.ghm(logits, targets)
            if self.training:
                with torch.no_grad():
                    g = (torch.sigmoid(logits.detach().float()) - targets).abs()
                    self.stats.add(g, targets > 0, self.ghm, before, GHMC_TOP_EDGE)
            return loss
        if self.name == "ce":
            loss = binary_cross_entropy(logits, targets, reduction="sum")
        elif self.name == "alpha_ce":
            loss = alpha_balanced_bce(logits, targets, alpha=o["alpha"], reduction="sum")
        else:
            loss = sigmoid_focal_loss(logits, targets, alpha=o["alpha"], gamma=o["gamma"],
                                      reduction="sum")
        return self.loss_weight * loss / num_pos

    def extra_repr(self) -> str:
        return f"{self.name!r}, " + ", ".join(f"{k}={v}" for k, v in self.options.items())


class BoxLoss(nn.Module):
    """The box regression loss of a dense detector, over the positive anchors of a batch.

    ``forward(deltas, anchors, gt_boxes, box_coder, num_pos)``: ``deltas`` ``Tensor[P, 4]`` the
    predicted offsets of the P positive anchors, ``anchors`` and ``gt_boxes`` ``Tensor[P, 4]``
    (x1, y1, x2, y2) their anchors and matched boxes, ``box_coder`` torchvision's ``BoxCoder``,
    ``num_pos`` a float scalar tensor (P, at least 1). Returns a scalar:

    * ``l1``, ``smooth_l1``, ``asl1``, ``balanced_l1``: ``loss_weight * sum / num_pos`` over the
      4 encoded offsets (:func:`~imbalance.losses.smooth_l1_loss`,
      :func:`~imbalance.losses.asl1_loss`, :func:`~imbalance.losses.balanced_l1_loss`);
    * ``giou``: ``loss_weight * sum / num_pos`` of torchvision's generalised IoU loss on the
      decoded boxes;
    * ``ghm_r``: ``loss_weight *`` :class:`~imbalance.losses.GHMR` (its own normalisation).
    """

    def __init__(self, name: str = "smooth_l1", **options: Any) -> None:
        super().__init__()
        self.name = name
        self.options = _options("box", name, BOX_DEFAULTS, options)
        self.loss_weight = float(self.options["loss_weight"])
        if name == "balanced_l1":  # a γ/α whose b overflows is refused now, not at step 1
            balanced_l1_b(self.options["alpha"], self.options["gamma"])
        self.ghm = (GHMR(float(self.options["mu"]), int(self.options["bins"]),
                         float(self.options["momentum"])) if name == "ghm_r" else None)
        self.stats = GHMStats()

    def forward(self, deltas: Tensor, anchors: Tensor, gt_boxes: Tensor,
                box_coder: det_utils.BoxCoder, num_pos: Tensor) -> Tensor:
        o = self.options
        if self.name == "giou":
            boxes = box_coder.decode_single(deltas, anchors)
            loss = generalized_box_iou_loss(boxes, gt_boxes, reduction="sum")
            return self.loss_weight * loss / num_pos
        target = box_coder.encode_single(gt_boxes, anchors)
        if self.ghm is not None:
            before = self.ghm.acc_sum.clone()
            loss = self.loss_weight * self.ghm(deltas, target)
            if self.training:
                with torch.no_grad():
                    g = ghm_r_gradient_norm((deltas.detach() - target).float(), self.ghm.mu)
                    self.stats.add(g, None, self.ghm, before, GHMR_TOP_EDGE)
            return loss
        if self.name == "l1":
            loss = F.l1_loss(deltas, target, reduction="sum")
        elif self.name == "smooth_l1":
            loss = smooth_l1_loss(deltas, target, beta=o["beta"], reduction="sum")
        elif self.name == "asl1":
            loss = asl1_loss(deltas, target, mu=o["mu"], reduction="sum")
        else:
            loss = balanced_l1_loss(deltas, target, alpha=o["alpha"], gamma=o["gamma"],
                                    beta=o["beta"], reduction="sum")
        return self.loss_weight * loss / num_pos

    def extra_repr(self) -> str:
        return f"{self.name!r}, " + ", ".join(f"{k}={v}" for k, v in self.options.items())


class AnchorTargets(NamedTuple):
    """The anchors of a batch, matched to the ground truth (B images, A anchors each, K classes).

    Attributes:
        matched (Tensor[B, A], int64): matched gt index; -1 negative, -2 ignored.
        valid (Tensor[B, A], bool): anchors that count in the classification loss (not ignored).
        positive (Tensor[B, A], bool): positive anchors.
        cls_targets (Tensor[B, A, K], float): one-hot class targets, zero rows for negatives.
        gt_boxes (Tensor[P, 4], float): matched box of each positive anchor, in ``positive`` order.
        anchors (Tensor[P, 4], float): the positive anchors themselves.
    """

    matched: Tensor
    valid: Tensor
    positive: Tensor
    cls_targets: Tensor
    gt_boxes: Tensor
    anchors: Tensor


def anchor_targets(targets: list[dict[str, Tensor]], anchors: list[Tensor],
                   matched_idxs: list[Tensor], num_classes: int) -> AnchorTargets:
    """Classification and box targets of every anchor of a batch (labels 1..K -> columns 0..K-1).

    Args:
        targets: per image, ``boxes`` ``Tensor[G_i, 4]`` and ``labels`` ``Tensor[G_i]`` int64.
        anchors: per image, ``Tensor[A, 4]`` (the same A for every image of a batch).
        matched_idxs: per image, ``Tensor[A]`` int64 from torchvision's ``Matcher``.
        num_classes: K.
    """
    matched = torch.stack(matched_idxs)
    positive = matched >= 0
    valid = matched != det_utils.Matcher.BETWEEN_THRESHOLDS
    labels = torch.zeros_like(matched)
    gt_boxes = []
    for i, t in enumerate(targets):
        pos_i = positive[i]
        labels[i, pos_i] = t["labels"][matched[i, pos_i]]
        gt_boxes.append(t["boxes"][matched[i, pos_i]])
    cls_targets = torch.zeros((*matched.shape, num_classes), device=matched.device)
    if (labels[positive] > num_classes).any() or (labels[positive] < 1).any():
        raise ValueError(f"target labels must be in 1..{num_classes}")
    cls_targets[positive, labels[positive] - 1] = 1.0
    anchors_pos = torch.stack(anchors)[positive]
    return AnchorTargets(matched, valid, positive, cls_targets, torch.cat(gt_boxes), anchors_pos)


def _mean_over_processes(x: Tensor) -> Tensor:
    """``x`` averaged over the processes of a distributed run (``x`` itself otherwise).

    DistributedDataParallel averages the gradients of the W processes. With each process dividing
    its loss sum S_r by the mean positive count (Σ_r P_r) / W, the averaged gradient is that of
    (Σ_r S_r) / (Σ_r P_r): the loss of the whole global batch, as one process would compute it.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


class RetinaNetHead(tv_retinanet.RetinaNetHead):
    """torchvision's RetinaNet head (4 conv layers per branch) with our loss seam.

    Args:
        in_channels: channels of every pyramid level.
        num_anchors: anchors per location.
        num_classes: K (one sigmoid output per object class).
        cls_loss, box_loss: :class:`ClassificationLoss` and :class:`BoxLoss` modules.
        prior_prob: π, the initial foreground probability of every output (the classifier's
            bias starts at ``-log((1 - π) / π)``); ``None`` starts the bias at 0 (p = 0.5).
        norm: ``"gn"`` puts GroupNorm in the head's conv layers (torchvision's v2 head), ``None``
            leaves them plain (the paper's head).
        ghm_scope: ``"level"`` calls a GHM loss once per pyramid level and sums the levels (the
            authors' wiring), ``"batch"`` once over the whole batch; see the module docstring.
            The other losses do not depend on it.
        ohem: online hard example mining (:class:`~imbalance.ohem.OHEM`): the classification
            loss sees only each image's hard minibatch, ranked by :meth:`ClassificationLoss.
            elementwise` summed over the K outputs, and is normalised by the positives in it
            (at least 1); the box loss is unchanged. ``None`` (default): every valid anchor.
            Not with ``ghm_c``.

    ``forward`` records ``level_sizes``, the number of anchors of each level (locations times
    anchors per location, finest first), which the per-level losses split the anchors by.
    """

    level_sizes: tuple[int, ...]

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int,
                 cls_loss: ClassificationLoss, box_loss: BoxLoss, *,
                 prior_prob: float | None = 0.01, norm: str | None = "gn",
                 ghm_scope: str = "level", ohem: OHEM | None = None) -> None:
        if ghm_scope not in GHM_SCOPES:
            raise ValueError(f"unknown ghm_scope {ghm_scope!r}; expected one of {GHM_SCOPES}")
        if ohem is not None and cls_loss.ghm is not None:
            raise ValueError("OHEM ranks anchors by an element-wise loss; GHM-C has none")
        layer = None if norm is None else norm_layer(norm, math.gcd(32, in_channels))
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=layer)
        logits = self.classification_head.cls_logits
        if prior_prob is None:
            nn.init.zeros_(logits.bias)
        elif not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1) or None, got {prior_prob}")
        else:
            nn.init.constant_(logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.box_loss = box_loss
        self.ghm_scope = ghm_scope
        self.ohem = ohem
        self.num_anchors = num_anchors
        self.level_sizes = ()

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        self.level_sizes = tuple(f.shape[-2] * f.shape[-1] * self.num_anchors for f in x)
        return super().forward(x)

    def training_statistics(self) -> dict[str, float]:
        """The GHM losses' statistics of the last training iteration (:class:`GHMStats`):
        ``ghm_c_bins``, ``ghm_c_positive_grad``, ``ghm_r_bins``; empty without GHM."""
        return {**self.cls_loss.stats.read("ghm_c"), **self.box_loss.stats.read("ghm_r")}

    def anchor_levels(self, device: torch.device | None = None) -> Tensor:
        """The pyramid level (0 = finest) of each anchor of an image, int64 ``(A,)``, from the
        ``level_sizes`` of the last ``forward``."""
        sizes = torch.tensor(self.level_sizes, device=device)
        return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)

    @torch.no_grad()
    def hard_example_mask(self, cls_logits: Tensor, t: AnchorTargets,
                          anchors: list[Tensor]) -> Tensor:
        """The anchors OHEM keeps (Tensor[B, A], bool): per image, :meth:`OHEM.select` over the
        valid anchors, ranked by their loss summed over the K outputs."""
        if self.ohem is None:
            raise RuntimeError("this head has no OHEM settings")
        loss = self.cls_loss.elementwise(cls_logits.detach(), t.cls_targets).sum(-1)
        return self.ohem.mask(loss, anchors, t.valid, t.positive)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        t = anchor_targets(targets, anchors, matched_idxs, self.num_classes)
        num_pos = _mean_over_processes(t.positive.sum().to(head_outputs["cls_logits"].dtype))
        num_pos = num_pos.clamp(min=1)
        cls_mask, cls_num_pos = t.valid, num_pos
        if self.ohem is not None:
            cls_mask = self.hard_example_mask(head_outputs["cls_logits"], t, anchors)
            cls_num_pos = _mean_over_processes(
                (cls_mask & t.positive).sum().to(num_pos.dtype)).clamp(min=1)
        logits = head_outputs["cls_logits"][cls_mask]
        cls_targets = t.cls_targets[cls_mask]
        deltas = head_outputs["bbox_regression"][t.positive]
        box_coder = self.regression_head.box_coder
        per_level = self.ghm_scope == "level"
        if per_level and (self.cls_loss.ghm is not None or self.box_loss.ghm is not None):
            levels = self.anchor_levels(logits.device)
            if levels.numel() != t.valid.shape[-1]:
                raise RuntimeError(f"the head's level sizes {self.level_sizes} do not add up to "
                                   f"the {t.valid.shape[-1]} anchors of an image")
            levels = levels.expand_as(t.valid)
            cls_level, box_level = levels[t.valid], levels[t.positive]
        if per_level and self.cls_loss.ghm is not None:
            cls = sum(self.cls_loss(logits[cls_level == k], cls_targets[cls_level == k], num_pos)
                      for k in range(len(self.level_sizes)))
        else:
            cls = self.cls_loss(logits, cls_targets, cls_num_pos)
        if per_level and self.box_loss.ghm is not None:
            box = sum(self.box_loss(deltas[box_level == k], t.anchors[box_level == k],
                                    t.gt_boxes[box_level == k], box_coder, num_pos)
                      for k in range(len(self.level_sizes)))
        else:
            box = self.box_loss(deltas, t.anchors, t.gt_boxes, box_coder, num_pos)
        return {"classification": cls, "bbox_regression": box}


class AnchorOutputs(NamedTuple):
    """What a RetinaNet predicts for every anchor of a batch, next to its targets.

    ``logits`` (Tensor[B, A, K]) and ``deltas`` (Tensor[B, A, 4]) are the head's outputs,
    ``targets`` the :class:`AnchorTargets`, ``box_targets`` (Tensor[P, 4]) the encoded offsets
    of the positives (``deltas[targets.positive]`` is what the box loss compares with them), and
    ``anchors`` (Tensor[B, A, 4]) every anchor's box in the transformed images' coordinates.
    """

    logits: Tensor
    deltas: Tensor
    targets: AnchorTargets
    box_targets: Tensor
    anchors: Tensor


class RetinaNet(tv_retinanet.RetinaNet):
    """torchvision's RetinaNet whose head is a :class:`RetinaNetHead` with K sigmoid outputs.

    Detections are labelled 1..K like the targets. :meth:`anchor_outputs` exposes the per-anchor
    logits and targets that the loss sees (the book's chapters measure them).
    """

    def training_statistics(self) -> dict[str, float]:
        """What the training loop logs beside the losses: the head's
        :meth:`RetinaNetHead.training_statistics`."""
        return self.head.training_statistics()

    def match(self, targets: list[dict[str, Tensor]], anchors: list[Tensor]) -> list[Tensor]:
        """Per image, the matched gt index of each anchor (-1 negative, -2 ignored)."""
        matched = []
        for anchors_i, targets_i in zip(anchors, targets, strict=True):
            if targets_i["boxes"].numel() == 0:
                matched.append(torch.full((anchors_i.size(0),), -1, dtype=torch.int64,
                                          device=anchors_i.device))
            else:
                iou = box_ops.box_iou(targets_i["boxes"], anchors_i)
                matched.append(self.proposal_matcher(iou))
        return matched

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor]) -> dict[str, Tensor]:
        return self.head.compute_loss(targets, head_outputs, anchors, self.match(targets, anchors))

    def postprocess_detections(self, head_outputs: dict[str, list[Tensor]],
                               anchors: list[list[Tensor]],
                               image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        detections = super().postprocess_detections(head_outputs, anchors, image_shapes)
        for d in detections:
            d["labels"] = d["labels"] + 1
        return detections

    def anchor_outputs(self, images: list[Tensor],
                       targets: list[dict[str, Tensor]]) -> AnchorOutputs:
        """Run the network on ``images`` and return every anchor's outputs and targets.

        The images go through the model's transform (resize, normalise, batch) first, as in
        ``forward``; boxes are in the transformed images' coordinates. Gradients flow if enabled.
        """
        images_t, targets_t = self.transform(images, [dict(t) for t in targets])
        features = list(self.backbone(images_t.tensors).values())
        outputs = self.head(features)
        anchors = self.anchor_generator(images_t, features)
        t = anchor_targets(targets_t, anchors, self.match(targets_t, anchors),
                           self.head.num_classes)
        box_targets = self.head.regression_head.box_coder.encode_single(t.gt_boxes, t.anchors)
        return AnchorOutputs(outputs["cls_logits"], outputs["bbox_regression"], t, box_targets,
                             torch.stack(anchors))


def _levels(anchors: AnchorConfig) -> tuple[tuple[int, ...], str]:
    """Backbone stages and extra levels giving feature strides ``anchors.strides``."""
    strides = tuple(anchors.strides)
    first = round(math.log2(strides[0]))
    expected = tuple(2 ** (first + i) for i in range(len(strides)))
    if strides != expected or first not in (2, 3) or len(strides) != 5:
        raise ValueError(f"anchor strides must be 4..64 (P2-P6) or 8..128 (P3-P7); got {strides}")
    return tuple(range(first - 1, 5)), "p6" if first == 2 else "p6p7"


def retinanet(
    num_classes: int,
    backbone: str = "resnet18",
    cls_loss: str = "focal",
    box_loss: str = "smooth_l1",
    *,
    norm: str = "gn",
    fpn_channels: int = 256,
    head_norm: str | None = "gn",
    prior_prob: float | None = 0.01,
    anchor_scale: float = 0.5,
    cls_options: Mapping[str, Any] | None = None,
    box_options: Mapping[str, Any] | None = None,
    min_size: int = 512,
    max_size: int = 512,
    ghm_scope: str = "level",
    ohem: Mapping[str, Any] | OHEM | None = None,
    backbone_width: int = 64,
    pretrained: str | None = None,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> RetinaNet:
    """A RetinaNet trained from scratch, with the classification and box losses chosen by name.

    Args:
        num_classes: K, the number of object classes (labels 1..K).
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101`` (random weights).
        cls_loss: one of :data:`CLS_LOSSES` (see :class:`ClassificationLoss`).
        box_loss: one of :data:`BOX_LOSSES` (see :class:`BoxLoss`).
        norm: ``"gn"`` or ``"bn"`` in the ResNet (never frozen: it is trained from scratch).
        fpn_channels: width of the FPN and the head.
        head_norm: ``"gn"`` (default, torchvision's v2 head: trains from scratch more stably) or
            ``None`` (the paper's head).
        prior_prob: π of the classifier's bias initialisation (``None``: bias 0).
        anchor_scale: RetinaNet's anchors (sizes 32..512 on strides 8..128, levels P3..P7) times
            this; 0.5 (default) gives sizes 16..256 on strides 4..64 (levels P2..P6), the
            benchmark's default :class:`~imbalance.data.AnchorConfig`.
        cls_options, box_options: options of the losses (override :data:`CLS_DEFAULTS` and
            :data:`BOX_DEFAULTS`), e.g. ``{"gamma": 1.0}``.
        min_size, max_size: the transform's resize (torchvision's semantics).
        ghm_scope: ``"level"`` (the authors' wiring: a GHM loss per pyramid level, one shared
            EMA, the levels summed) or ``"batch"`` (one call over the whole batch); see
            :class:`RetinaNetHead`.
        ohem: online hard example mining of the classification loss, the Focal Loss paper's
            baseline: :class:`~imbalance.ohem.OHEM` settings (``batch_size``,
            ``nms_threshold``, ``neg_pos_ratio``), ``{}`` for its defaults; ``None`` (default)
            trains on every valid anchor.
        backbone_width, pretrained, frozen_stages: the ResNet's width, a weight file of
            :mod:`imbalance.train.pretrain` and the stages frozen (``width``, ``weights`` and
            ``frozen_stages`` of :func:`~imbalance.models.backbones.resnet_fpn`).
        **kwargs: passed to torchvision's ``RetinaNet`` (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``fg_iou_thresh``, ``bg_iou_thresh``, ...).
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if anchor_scale not in (0.5, 1.0):
        raise ValueError(f"anchor_scale must be 0.5 (P2-P6) or 1.0 (P3-P7), got {anchor_scale}")
    cls_module = ClassificationLoss(cls_loss, **dict(cls_options or {}))
    box_module = BoxLoss(box_loss, **dict(box_options or {}))
    anchors = AnchorConfig.retinanet(anchor_scale)
    stages, extra = _levels(anchors)
    body = resnet_fpn(backbone, norm=norm, fpn_channels=fpn_channels, returned_layers=stages,
                      extra=extra, width=backbone_width, weights=pretrained,
                      frozen_stages=frozen_stages)
    generator = anchors.generator()
    if ohem is not None and not isinstance(ohem, OHEM):
        ohem = OHEM(**dict(ohem))
    head = RetinaNetHead(fpn_channels, generator.num_anchors_per_location()[0], num_classes,
                         cls_module, box_module, prior_prob=prior_prob, norm=head_norm,
                         ghm_scope=ghm_scope, ohem=ohem)
    return RetinaNet(body, num_classes, min_size=min_size, max_size=max_size,
                     anchor_generator=generator, head=head, **kwargs)
