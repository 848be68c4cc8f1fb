"""Libra R-CNN: torchvision's Faster R-CNN + FPN with three switchable balancing components.

Pang et al., *Libra R-CNN: Towards Balanced Learning for Object Detection* (CVPR 2019), attack
three imbalances of a two-stage detector, one component each:

* sample level, **IoU-balanced sampling**: the second stage's RoIs are drawn with
  :class:`~imbalance.sampling.IoUBalancedNegativeSampler` (negatives spread over IoU bins) and
  :class:`~imbalance.sampling.InstanceBalancedPositiveSampler` (positives capped per gt box);
* feature level, the **Balanced Feature Pyramid**
  (:class:`~imbalance.necks.BalancedFeaturePyramid`) after the FPN;
* objective level, **Balanced L1 loss** (:func:`~imbalance.losses.balanced_l1_loss`) for the
  second stage's box regression.

Everything else is torchvision's :class:`~torchvision.models.detection.FasterRCNN`: the RPN, the
anchors, RoIAlign, the two-MLP box head, the predictor, the box coder, the matcher, the image
transform and the post-processing. Only :class:`LibraRoIHeads` is new; it subclasses
torchvision's ``RoIHeads`` and replaces two seams, the proposal sampling and the box loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from imbalance.losses.balanced_l1 import balanced_l1_b, balanced_l1_loss
from imbalance.models.backbones import NORMS, RESNETS, BackboneWithNeck, resnet_fpn
from imbalance.models.loss_defaults import signature_defaults
from imbalance.necks.bfp import BalancedFeaturePyramid
from imbalance.sampling import (
    BINNINGS,
    InstanceBalancedPositiveSampler,
    IoUBalancedNegativeSampler,
    RandomSampler,
    Sampler,
)

__all__ = [
    "BALANCED_L1_DEFAULTS",
    "LibraRoIHeads",
    "ProposalSample",
    "libra_rcnn",
    "proposal_ious",
]

#: Balanced L1 in the second stage: the loss function's defaults (alpha 0.5, gamma 1.5, beta 1, the
#: paper's and the authors' Libra R-CNN config).
BALANCED_L1_DEFAULTS: dict[str, float] = signature_defaults(balanced_l1_loss, "alpha", "gamma",
                                                            "beta")
#: The second stage's smooth L1 beta without Balanced L1: 1.0 as the Libra authors' Faster R-CNN
#: (torchvision's ``fastrcnn_loss`` uses 1/9).
SMOOTH_L1_BETA = 1.0
TORCHVISION_REPRESENTATION = 1024  # the width of torchvision's (and the papers') box head

BoxLossFn = Callable[[Tensor, Tensor], Tensor]


def proposal_ious(proposals: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Best IoU of each proposal with any ground-truth box, and which box gives it.

    Args:
        proposals (Tensor[N, 4], float): boxes in ``(x1, y1, x2, y2)``.
        gt_boxes (Tensor[G, 4], float): ground-truth boxes in the same frame; ``G`` may be 0.

    Returns:
        ``(max_overlaps, matched_gt)``: ``Tensor[N]`` of the proposals' dtype, and ``Tensor[N]``
        int64 indices into ``gt_boxes`` (ties go to the first box). With no gt box every IoU is
        0 and every index -1.
    """
    if gt_boxes.shape[0] == 0:
        n = proposals.shape[0]
        no_gt = torch.full((n,), -1, dtype=torch.int64, device=proposals.device)
        return proposals.new_zeros(n), no_gt
    max_overlaps, matched_gt = box_ops.box_iou(gt_boxes, proposals).max(dim=0)
    return max_overlaps, matched_gt


def _describe(fn: Callable[..., Any]) -> str:
    """``name(key=value, ...)`` for a ``functools.partial``, else the function's name."""
    if isinstance(fn, partial):
        args = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
        return f"{_describe(fn.func)}({args})"
    return getattr(fn, "__qualname__", repr(fn))


class ProposalSample(NamedTuple):
    """One image's RoI sampling (:meth:`LibraRoIHeads.sample_proposals`); ``N`` proposals.

    ``pos_inds``/``neg_inds`` (Tensor[P] / Tensor[Q], int64) are the sampled positives and
    negatives, indices into the proposals; ``labels`` (Tensor[N], int64) is 1..K for
    positives, 0 for negatives and -1 for ignored proposals (IoU between the matcher's
    thresholds); ``matched_gt`` and ``max_overlaps`` are :func:`proposal_ious`.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    labels: Tensor
    matched_gt: Tensor
    max_overlaps: Tensor


class LibraRoIHeads(RoIHeads):
    """torchvision's box ``RoIHeads`` with pluggable RoI samplers and box-regression loss.

    Sampling seam: after the gt boxes are added to the proposals (torchvision's
    ``add_gt_proposals``, the authors' ``add_gt``), ``pos_sampler`` chooses
    ``min(#pos, int(batch_size_per_image * positive_fraction))`` positives given each
    proposal's matched gt index, and ``neg_sampler`` chooses ``min(#neg, batch_size_per_image -
    #chosen positives)`` negatives given each proposal's max IoU with any gt (torchvision's
    quotas). Both draw from torch's global RNG, so ``torch.manual_seed`` makes a step repeatable.

    Box-loss seam: ``box_loss(pred, target)`` is an element-wise loss *summed* over the
    positives' class-specific deltas ``Tensor[P, 4]``; as in torchvision's ``fastrcnn_loss`` the
    sum is divided by the number of sampled RoIs (positives and negatives) of the whole batch.
    The classification loss stays softmax cross-entropy, averaged over the sampled RoIs.

    Box detection only: masks and keypoints are not supported.

    Args:
        box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
        batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh, nms_thresh,
        detections_per_img: as torchvision's ``RoIHeads``.
        pos_sampler (Sampler): chooses positives, given matched gt indices.
        neg_sampler (Sampler): chooses negatives, given max IoUs.
        box_loss (callable): ``(pred, target) -> Tensor[]`` summed element-wise loss.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        *,
        pos_sampler: Sampler,
        neg_sampler: Sampler,
        box_loss: BoxLossFn,
    ) -> None:
        super().__init__(
            box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
            batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh,
            nms_thresh, detections_per_img,
        )
        del self.fg_bg_sampler  # replaced by the two samplers below
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.pos_sampler = pos_sampler
        self.neg_sampler = neg_sampler
        self.box_loss = box_loss

    @classmethod
    def from_roi_heads(cls, roi_heads: RoIHeads, **seams: Any) -> LibraRoIHeads:
        """Rebuild torchvision's ``roi_heads`` (sharing its modules) with the given seams."""
        if roi_heads.has_mask() or roi_heads.has_keypoint():
            raise NotImplementedError("LibraRoIHeads supports box detection only")
        matcher, sampler = roi_heads.proposal_matcher, roi_heads.fg_bg_sampler
        return cls(
            roi_heads.box_roi_pool, roi_heads.box_head, roi_heads.box_predictor,
            matcher.high_threshold, matcher.low_threshold,
            sampler.batch_size_per_image, sampler.positive_fraction,
            roi_heads.box_coder.weights, roi_heads.score_thresh, roi_heads.nms_thresh,
            roi_heads.detections_per_img, **seams,
        )

    def extra_repr(self) -> str:
        return (
            f"batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction},\n"
            f"pos_sampler={self.pos_sampler!r}, neg_sampler={self.neg_sampler!r},\n"
            f"box_loss={_describe(self.box_loss)}"
        )

    # ------------------------------------------------------------------------------- sampling
    def sample_proposals(
        self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> ProposalSample:
        """Label one image's proposals and draw the RoIs the second stage trains on.

        Labels follow torchvision's matcher (``allow_low_quality_matches=False``): IoU >=
        ``fg_iou_thresh`` is positive with its gt's label, IoU < ``bg_iou_thresh`` negative,
        in between ignored. The gt boxes are *not* added here (:meth:`select_training_samples`
        does that first), so this also serves to inspect a trained detector's proposals.

        Args:
            proposals (Tensor[N, 4], float), gt_boxes (Tensor[G, 4], float),
            gt_labels (Tensor[G], int64 in 1..K).
        """
        max_overlaps, matched_gt = proposal_ious(proposals, gt_boxes)
        if gt_labels.numel() == 0:
            labels = torch.zeros_like(matched_gt)
        else:
            labels = gt_labels[matched_gt].to(torch.int64)
        low, high = self.proposal_matcher.low_threshold, self.proposal_matcher.high_threshold
        labels = labels.masked_fill(max_overlaps < low, 0)
        labels = labels.masked_fill((max_overlaps >= low) & (max_overlaps < high), -1)

        num_pos = int(self.batch_size_per_image * self.positive_fraction)
        pos_inds = self.pos_sampler.sample(matched_gt, labels > 0, num_pos)
        num_neg = self.batch_size_per_image - pos_inds.numel()
        neg_inds = self.neg_sampler.sample(max_overlaps, labels == 0, num_neg)
        return ProposalSample(pos_inds, neg_inds, labels, matched_gt, max_overlaps)

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """torchvision's ``select_training_samples`` with :meth:`sample_proposals` inside.

        Returns ``(proposals, matched_idxs, labels, regression_targets)``, one tensor per image
        over its sampled RoIs (positives first): ``Tensor[R, 4]``, ``Tensor[R]`` int64 (0 for
        a negative of an image without gt, as in torchvision), ``Tensor[R]`` int64 and
        ``Tensor[R, 4]`` encoded deltas.
        """
        self.check_targets(targets)
        assert targets is not None  # for type checkers; check_targets raised otherwise
        dtype = proposals[0].dtype
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)

        rois, matched_idxs, labels, matched_gt_boxes = [], [], [], []
        for props, boxes, target in zip(proposals, gt_boxes, targets, strict=True):
            sample = self.sample_proposals(props, boxes, target["labels"])
            inds = torch.cat([sample.pos_inds, sample.neg_inds])
            matched = sample.matched_gt[inds].clamp(min=0)
            if boxes.shape[0] == 0:
                boxes = props.new_zeros((1, 4))
            rois.append(props[inds])
            labels.append(sample.labels[inds])
            matched_idxs.append(matched)
            matched_gt_boxes.append(boxes[matched])
        regression_targets = self.box_coder.encode(matched_gt_boxes, rois)
        return rois, matched_idxs, labels, regression_targets

    # ----------------------------------------------------------------------------------- loss
    def fastrcnn_loss(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """torchvision's ``fastrcnn_loss`` with ``self.box_loss`` for the box term.

        Args:
            class_logits (Tensor[R, C]): ``C = K + 1`` with background 0.
            box_regression (Tensor[R, 4 C]): class-specific deltas.
            labels, regression_targets: per image, as from :meth:`select_training_samples`.

        Returns:
            ``(loss_classifier, loss_box_reg)``: mean cross-entropy over the ``R`` sampled RoIs,
            and ``box_loss`` summed over the positives' deltas of their gt class, divided by R.
        """
        labels_all = torch.cat(labels)
        targets_all = torch.cat(regression_targets)
        loss_classifier = F.cross_entropy(class_logits, labels_all)
        pos = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(class_logits.shape[0], -1, 4)[pos, labels_all[pos]]
        loss_box_reg = self.box_loss(deltas, targets_all[pos]) / labels_all.numel()
        return loss_classifier, loss_box_reg

    # -------------------------------------------------------------------------------- forward
    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """torchvision's ``RoIHeads.forward``, box path only.

        Training returns ``([], {"loss_classifier", "loss_box_reg"})``; evaluation returns one
        ``{"boxes": Tensor[D, 4], "labels": Tensor[D] int64, "scores": Tensor[D]}`` per image
        and ``{}``.
        """
        if self.has_mask() or self.has_keypoint():
            raise NotImplementedError("LibraRoIHeads supports box detection only")
        if self.training:
            for t in targets or []:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be float, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")
            proposals, _, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = self.fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        result = [
            {"boxes": b, "labels": lab, "scores": s}
            for b, lab, s in zip(boxes, labels, scores, strict=True)
        ]
        return result, {}


# ------------------------------------------------------------------------------------- builder
def _check_balanced_l1_options(options: Mapping[str, float] | None) -> dict[str, float]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(BALANCED_L1_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown balanced_l1_options {unknown}; expected keys among "
            f"{sorted(BALANCED_L1_DEFAULTS)}"
        )
    for key, value in options.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value > 0):
            raise ValueError(f"balanced_l1_options[{key!r}] must be a number > 0, got {value!r}")
    merged = {**BALANCED_L1_DEFAULTS, **options}
    balanced_l1_b(merged["alpha"], merged["gamma"])  # refuses a γ/α whose b overflows
    return merged


def libra_rcnn(
    num_classes: int,
    backbone: str = "resnet18",
    iou_balanced: bool = True,
    bfp: bool = True,
    balanced_l1: bool = True,
    *,
    norm: str = "bn",
    fpn_channels: int = 256,
    num_bins: int = 3,
    binning: str = "paper",
    floor_thr: float = -1,
    balanced_l1_options: dict[str, float] | None = None,
    smooth_l1_beta: float = SMOOTH_L1_BETA,
    representation_size: int = 1024,
    backbone_width: int = 64,
    pretrained: str | None = None,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> FasterRCNN:
    """Libra R-CNN as torchvision's ``FasterRCNN`` + FPN, from scratch, each component a switch.

    With all three switches off this *is* the Faster R-CNN + FPN baseline of the Libra authors:
    torchvision's model with uniform RoI sampling and a second-stage smooth L1 with beta 1 (the
    authors' config; torchvision's is 1/9, ``smooth_l1_beta``); the backbone's normalisation
    (trainable BatchNorm or GroupNorm instead of frozen BatchNorm, see
    :mod:`imbalance.models.backbones`) also differs from torchvision's recipe.

    Args:
        num_classes: K, the number of object categories (labels 1..K; the model has ``K + 1``
            classes internally, background 0).
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101`` (random weights).
        iou_balanced: sample the second stage's negatives with
            :class:`~imbalance.sampling.IoUBalancedNegativeSampler` (``num_bins`` IoU bins,
            ``binning``) and its positives with
            :class:`~imbalance.sampling.InstanceBalancedPositiveSampler`; off: uniform
            :class:`~imbalance.sampling.RandomSampler` for both (the same distribution as
            torchvision's ``BalancedPositiveNegativeSampler``). The RPN keeps its uniform
            sampler either way, as in the authors' config.
        bfp: put a :class:`~imbalance.necks.BalancedFeaturePyramid` (non-local refinement,
            refine level 2 of the five levels P2..P6) after the FPN.
        balanced_l1: second-stage box loss :func:`~imbalance.losses.balanced_l1_loss`
            (alpha 0.5, gamma 1.5, beta 1, loss weight 1); off: smooth L1 with
            ``smooth_l1_beta``. Either way the sum over the positives' deltas is divided by the
            number of sampled RoIs, as torchvision's ``fastrcnn_loss`` (and the authors'
            ``avg_factor``) does. The RPN's losses are torchvision's in all cases.
        norm: ``"bn"`` or ``"gn"`` in the ResNet (see :func:`imbalance.models.resnet_fpn`).
        fpn_channels: width of the FPN (and BFP) maps.
        num_bins: IoU bins of the negative sampler (3 in the paper).
        binning: ``"paper"`` or ``"authors"``, see below.
        floor_thr: the negative sampler's floor-pool threshold: ``-1`` (default) bins every
            negative; ``0`` keeps the IoU == 0 negatives in a floor pool, as the authors' sampler
            does from its second call on. ``binning="authors", floor_thr=0`` is the released
            sampler's behaviour, ``binning="paper", floor_thr=-1`` the paper's intent.
        balanced_l1_options: overrides of ``alpha``, ``gamma``, ``beta`` (used only with
            ``balanced_l1=True``; checked either way).
        smooth_l1_beta: beta of the second stage's smooth L1 without Balanced L1: 1.0 (the
            authors' Faster R-CNN, default) or torchvision's 1/9.
        representation_size: width of the two-MLP box head (1024 in the papers; a narrow FPN
            can take a narrower head).
        backbone_width, pretrained, frozen_stages: the ResNet's width, a weight file of
            :mod:`imbalance.train.pretrain` and the stages frozen (``width``, ``weights`` and
            ``frozen_stages`` of :func:`~imbalance.models.backbones.resnet_fpn`).
        **kwargs: passed to torchvision's ``FasterRCNN``: ``min_size``, ``max_size``,
            ``rpn_pre_nms_top_n_train``, ``rpn_post_nms_top_n_train``, ``rpn_pre_nms_top_n_test``,
            ``rpn_post_nms_top_n_test``, ``box_batch_size_per_image`` (512, as the authors),
            ``box_positive_fraction`` (0.25), ``box_score_thresh``, ``box_detections_per_img``...

    Returns:
        A ``FasterRCNN`` whose ``roi_heads`` is a :class:`LibraRoIHeads` and whose ``backbone``
        is ``BackboneWithNeck(fpn, bfp)`` when ``bfp`` else the FPN itself. Training mode gives
        torchvision's loss dict (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``,
        ``loss_rpn_box_reg``), evaluation mode a list of ``{"boxes", "labels", "scores"}``.

    Following and departing from the authors' code (mmdetection's Libra Faster R-CNN config):

    * Same: 512 RoIs per image, a quarter positive, gt boxes added as proposals, instance-
      balanced positives, 3 IoU bins, ``floor_fraction`` 0; BFP at refine level 2 with a
      non-local block; Balanced L1 (0.5, 1.5, 1) with the ``avg_factor`` normalisation.
    * ``binning="paper"`` (default) spans the bins over the negatives' own IoU range, so all
      three are used; ``binning="authors"`` reproduces the released code, whose bins span
      [0, 1] because the added gt boxes have IoU 1, leaving the top bin [2/3, 1) always empty
      (its share is drawn uniformly from the rest of the IoU pool).
    * The negative sampler is stateless with ``floor_thr=-1``: every negative is binned on every
      call. The authors' sampler does that on its first call only, then switches itself to
      ``floor_thr=0`` (IoU == 0 negatives as a separate floor pool): ``floor_thr=0`` with
      ``binning="authors"`` is its behaviour from then on.
    * The rest is torchvision's Faster R-CNN rather than mmdetection's (torchvision's RPN and
      RoIAlign settings).

    CPU runs: small images and fewer RoIs keep a step cheap, e.g. ``min_size=320,
    max_size=512, rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
    rpn_post_nms_top_n_test=300, box_batch_size_per_image=128`` with ``norm="gn"``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1 (categories), got {num_classes!r}")
    if backbone not in RESNETS:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {RESNETS}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; expected one of {BINNINGS}")
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"fpn_channels must be an int >= 1, got {fpn_channels!r}")
    size_ok = isinstance(representation_size, int) and not isinstance(representation_size, bool)
    if not size_ok or representation_size < 1:
        raise ValueError(f"representation_size must be an int >= 1, got {representation_size!r}")
    beta_ok = isinstance(smooth_l1_beta, int | float) and not isinstance(smooth_l1_beta, bool)
    if not beta_ok or not math.isfinite(smooth_l1_beta) or smooth_l1_beta <= 0:
        raise ValueError(f"smooth_l1_beta must be a number > 0, got {smooth_l1_beta!r}")
    if floor_thr not in (-1, 0):
        raise ValueError(f"floor_thr must be -1 (no floor pool) or 0 (the authors' floor pool "
                         f"of IoU == 0 negatives), got {floor_thr!r}")
    l1_options = _check_balanced_l1_options(balanced_l1_options)
    iou_sampler = IoUBalancedNegativeSampler(num_bins, floor_thr=floor_thr, binning=binning)

    features: nn.Module = resnet_fpn(backbone, norm=norm, fpn_channels=fpn_channels,
                                     width=backbone_width, weights=pretrained,
                                     frozen_stages=frozen_stages)
    if bfp:
        neck = BalancedFeaturePyramid(fpn_channels, 5, refine_level=2, refine="non_local")
        features = BackboneWithNeck(features, neck)
    if representation_size != TORCHVISION_REPRESENTATION:
        kwargs["box_head"] = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
        kwargs["box_predictor"] = FastRCNNPredictor(representation_size, num_classes + 1)
    else:  # torchvision builds its own, drawing the same initial weights as before
        kwargs["num_classes"] = num_classes + 1
    model = FasterRCNN(features, **kwargs)

    samplers: tuple[Sampler, Sampler]
    if iou_balanced:
        samplers = (InstanceBalancedPositiveSampler(), iou_sampler)
    else:
        samplers = (RandomSampler(), RandomSampler())
    if balanced_l1:
        box_loss: BoxLossFn = partial(balanced_l1_loss, **l1_options, reduction="sum")
    else:
        box_loss = partial(F.smooth_l1_loss, beta=float(smooth_l1_beta), reduction="sum")
    model.roi_heads = LibraRoIHeads.from_roi_heads(
        model.roi_heads, pos_sampler=samplers[0], neg_sampler=samplers[1], box_loss=box_loss
    )
    return model
