"""Libra R-CNN on torchvision's Faster R-CNN: losses, seams (sampling, box loss, BFP), errors."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import box_iou

from imbalance.losses import balanced_l1_loss
from imbalance.models import BackboneWithNeck, build_model
from imbalance.models.libra_rcnn import LibraRoIHeads, libra_rcnn, proposal_ious
from imbalance.necks import BalancedFeaturePyramid
from imbalance.sampling import (
    InstanceBalancedPositiveSampler,
    IoUBalancedNegativeSampler,
    RandomSampler,
)

K = 3
SIDE = 128
TINY: dict[str, Any] = {
    "fpn_channels": 32,
    "min_size": SIDE,
    "max_size": SIDE,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 64,
}
SWITCHES = list(itertools.product([False, True], repeat=3))  # iou_balanced, bfp, balanced_l1
LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(*switches: bool, **options: Any) -> FasterRCNN:
    torch.manual_seed(0)
    return libra_rcnn(K, "resnet18", *switches, **{**TINY, **options})


@functools.cache
def shared_heads(iou_balanced: bool, binning: str = "paper") -> LibraRoIHeads:
    """Read-only RoI heads for the sampling tests (built once per switch)."""
    return tiny_model(iou_balanced, False, False, binning=binning).roi_heads


def images() -> list[Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, SIDE, SIDE, generator=g) for _ in range(2)]


def targets(empty: bool = False) -> list[dict[str, Tensor]]:
    if empty:
        none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        return [dict(none), dict(none)]
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 100.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[20.0, 30.0, 90.0, 110.0]]), "labels": torch.tensor([2])},
    ]


def train_step(model: FasterRCNN, tgts: list[dict[str, Tensor]] | None = None) -> dict:
    """One training forward, recording the sampled RoIs and the box predictor's outputs."""
    model.train()
    record: dict[str, Any] = {}
    heads = model.roi_heads
    original = heads.select_training_samples

    def spy(proposals: list[Tensor], tg: list[dict[str, Tensor]]) -> tuple:
        record["samples"] = original(proposals, tg)
        return record["samples"]

    heads.select_training_samples = spy
    hook = heads.box_predictor.register_forward_hook(
        lambda module, inputs, output: record.__setitem__("pred", output)
    )
    try:
        record["losses"] = model(images(), targets() if tgts is None else tgts)
    finally:
        hook.remove()
        del heads.select_training_samples
    return record


# ----------------------------------------------------------------------------- whole model
@pytest.mark.parametrize(("iou_balanced", "bfp", "balanced_l1"), SWITCHES)
def test_train_losses_finite_and_backward(iou_balanced: bool, bfp: bool, balanced_l1: bool) -> None:
    model = tiny_model(iou_balanced, bfp, balanced_l1)
    losses = model(images(), targets())
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), name
    assert losses["loss_box_reg"] > 0  # the added gt boxes are positives
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith(("roi_heads.", "rpn.")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    fpn = model.backbone.backbone if bfp else model.backbone
    stem = fpn.body.conv1.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0


@pytest.mark.parametrize("balanced_l1", [False, True])
def test_background_only_batch(balanced_l1: bool) -> None:
    model = tiny_model(True, False, balanced_l1)
    record = train_step(model, targets(empty=True))
    losses = record["losses"]
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0.0
    labels = torch.cat(record["samples"][2])
    assert labels.numel() == 2 * TINY["box_batch_size_per_image"] and (labels == 0).all()
    sum(losses.values()).backward()


def test_eval_output() -> None:
    model = tiny_model(True, True, True, box_score_thresh=0.0).eval()
    with torch.no_grad():
        out = model(images())
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "labels", "scores"}
        n = det["boxes"].shape[0]
        assert n > 0 and det["boxes"].shape == (n, 4)
        assert det["scores"].shape == (n,) and det["labels"].dtype == torch.int64
        assert det["labels"].min() >= 1 and det["labels"].max() <= K
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= SIDE).all()


def test_deterministic_under_manual_seed() -> None:
    model = tiny_model(True, True, True)
    torch.manual_seed(123)
    first = model(images(), targets())
    torch.manual_seed(123)
    second = model(images(), targets())
    for key in LOSS_KEYS:
        assert first[key].item() == second[key].item(), key


def test_build_model_by_name() -> None:
    torch.manual_seed(0)
    model = build_model("libra_rcnn", K, iou_balanced=False, **TINY)
    assert isinstance(model, FasterRCNN) and isinstance(model.roi_heads, LibraRoIHeads)
    assert model.roi_heads.box_predictor.cls_score.out_features == K + 1
    assert model.roi_heads.batch_size_per_image == TINY["box_batch_size_per_image"]
    assert model.rpn._post_nms_top_n["training"] == TINY["rpn_post_nms_top_n_train"]


# --------------------------------------------------------------------------------- seams
def test_switches_pick_samplers_and_losses() -> None:
    off = tiny_model(False, False, False).roi_heads
    assert isinstance(off.pos_sampler, RandomSampler)
    assert isinstance(off.neg_sampler, RandomSampler)
    assert off.box_loss.func is F.smooth_l1_loss and off.box_loss.keywords["beta"] == 1.0
    assert tiny_model(False, False, False, smooth_l1_beta=1 / 9).roi_heads.box_loss.keywords[
        "beta"] == 1 / 9
    assert not hasattr(off, "fg_bg_sampler")

    on = tiny_model(True, False, True, num_bins=4, binning="authors",
                    balanced_l1_options={"gamma": 1.0}).roi_heads
    assert isinstance(on.pos_sampler, InstanceBalancedPositiveSampler)
    assert isinstance(on.neg_sampler, IoUBalancedNegativeSampler)
    assert (on.neg_sampler.num_bins, on.neg_sampler.binning) == (4, "authors")
    assert on.neg_sampler.floor_thr == -1
    authors = tiny_model(True, False, False, binning="authors", floor_thr=0).roi_heads
    assert (authors.neg_sampler.binning, authors.neg_sampler.floor_thr) == ("authors", 0.0)
    narrow = tiny_model(False, False, False, representation_size=64)
    assert narrow.roi_heads.box_head.fc7.out_features == 64
    assert narrow.roi_heads.box_predictor.cls_score.in_features == 64
    assert on.box_loss.func is balanced_l1_loss
    assert on.box_loss.keywords == {"alpha": 0.5, "gamma": 1.0, "beta": 1.0, "reduction": "sum"}


@pytest.mark.parametrize("bfp", [False, True])
def test_bfp_in_module_tree_iff_switched_on(bfp: bool) -> None:
    model = tiny_model(False, bfp, False)
    necks = [m for m in model.modules() if isinstance(m, BalancedFeaturePyramid)]
    if bfp:
        assert isinstance(model.backbone, BackboneWithNeck)
        assert len(necks) == 1 and necks[0] is model.backbone.neck
        neck = necks[0]
        assert (neck.in_channels, neck.num_levels) == (TINY["fpn_channels"], 5)
        assert (neck.refine_level, neck.refine_type) == (2, "non_local")
    else:
        assert isinstance(model.backbone, BackboneWithFPN) and not necks
    assert model.backbone.out_channels == TINY["fpn_channels"]


def test_baseline_losses_equal_torchvision_fastrcnn_loss() -> None:
    """With torchvision's beta 1/9 the baseline is torchvision's Faster R-CNN loss."""
    record = train_step(tiny_model(False, False, False, smooth_l1_beta=1 / 9))
    _, _, labels, regression_targets = record["samples"]
    class_logits, box_regression = record["pred"]
    assert (torch.cat(labels) > 0).any()
    want_cls, want_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
    torch.testing.assert_close(record["losses"]["loss_classifier"], want_cls)
    torch.testing.assert_close(record["losses"]["loss_box_reg"], want_box)


@pytest.mark.parametrize("options", [None, {"alpha": 0.3, "gamma": 1.0, "beta": 0.5}])
def test_balanced_l1_box_loss_by_hand(options: dict[str, float] | None) -> None:
    record = train_step(tiny_model(False, False, True, balanced_l1_options=options))
    _, _, labels, regression_targets = record["samples"]
    class_logits, box_regression = record["pred"]
    labels_all, deltas_all = torch.cat(labels), torch.cat(regression_targets)
    n = labels_all.numel()
    pos = torch.where(labels_all > 0)[0]
    assert 0 < pos.numel() <= 2 * int(TINY["box_batch_size_per_image"] * 0.25)
    pred = box_regression.reshape(n, K + 1, 4)[pos, labels_all[pos]]
    want = balanced_l1_loss(pred, deltas_all[pos], **(options or {})).sum() / n
    got = record["losses"]["loss_box_reg"]
    torch.testing.assert_close(got, want)
    smooth = F.smooth_l1_loss(pred, deltas_all[pos], beta=1.0, reduction="sum") / n
    assert not torch.allclose(got, smooth)
    baseline = train_step(tiny_model(False, False, False))
    _, _, labels_b, targets_b = baseline["samples"]
    labels_b, targets_b = torch.cat(labels_b), torch.cat(targets_b)
    pos_b = torch.where(labels_b > 0)[0]
    pred_b = baseline["pred"][1].reshape(labels_b.numel(), K + 1, 4)[pos_b, labels_b[pos_b]]
    want_b = F.smooth_l1_loss(pred_b, targets_b[pos_b], beta=1.0, reduction="sum")
    want_b = want_b / labels_b.numel()
    torch.testing.assert_close(baseline["losses"]["loss_box_reg"], want_b)
    torch.testing.assert_close(
        record["losses"]["loss_classifier"], F.cross_entropy(class_logits, labels_all)
    )


# ------------------------------------------------------------------------------ sampling
def shifted(box: list[float], ious: Tensor) -> Tensor:
    """Copies of ``box`` shifted right so their IoU with it is ``ious``: d = w (1 - t) / (1 + t)."""
    x1, y1, x2, y2 = box
    d = (x2 - x1) * (1 - ious) / (1 + ious)
    ones = torch.ones_like(ious)
    return torch.stack([x1 + d, y1 * ones, x2 + d, y2 * ones], dim=1)


GT_A, GT_B = [0.0, 0.0, 100.0, 100.0], [300.0, 300.0, 340.0, 340.0]
GT_BOXES = torch.tensor([GT_A, GT_B])
GT_LABELS = torch.tensor([1, 2])
BANDS = [(0.0, 0.1, 300), (0.2, 0.25, 30), (0.4, 0.48, 30)]  # negatives: IoU range and count


def crafted_proposals(num_pos_a: int = 100, num_pos_b: int = 5) -> Tensor:
    negs = [shifted(GT_A, torch.linspace(lo, hi, n, dtype=torch.float64)) for lo, hi, n in BANDS]
    pos_a = shifted(GT_A, torch.linspace(0.55, 0.95, num_pos_a, dtype=torch.float64))
    pos_b = shifted(GT_B, torch.linspace(0.6, 0.9, num_pos_b, dtype=torch.float64))
    return torch.cat([*negs, pos_a, pos_b]).float()


def test_proposal_ious() -> None:
    props = crafted_proposals()
    max_overlaps, matched = proposal_ious(props, GT_BOXES)
    iou = box_iou(GT_BOXES, props)
    torch.testing.assert_close(max_overlaps, iou.max(0).values)
    assert matched.dtype == torch.int64 and (matched[-5:] == 1).all() and (matched[:-5] == 0).all()
    torch.testing.assert_close(max_overlaps[:300], torch.linspace(0.0, 0.1, 300), atol=1e-5,
                               rtol=0)
    none_iou, none_gt = proposal_ious(props, torch.zeros(0, 4))
    assert (none_iou == 0).all() and (none_gt == -1).all() and none_gt.shape == (props.shape[0],)


def band_counts(max_overlaps: Tensor, inds: Tensor) -> list[int]:
    ious = max_overlaps[inds]
    return [int(((ious >= lo - 1e-4) & (ious <= hi + 1e-4)).sum()) for lo, hi, _ in BANDS]


def test_iou_balanced_quotas() -> None:
    heads = shared_heads(True)  # 64 RoIs: 16 positives, 48 negatives
    torch.manual_seed(0)
    sample = heads.sample_proposals(crafted_proposals(), GT_BOXES, GT_LABELS)
    assert (sample.labels[sample.pos_inds] > 0).all()
    assert (sample.labels[sample.neg_inds] == 0).all()
    # negatives: 3 paper bins over [0, 0.48] -> [0, .16), [.16, .32), [.32, .48], 16 from each
    assert band_counts(sample.max_overlaps, sample.neg_inds) == [16, 16, 16]
    # positives: 2 gts, cap round(16 / 2) + 1 = 9 per gt, so all 5 of gt B's are kept
    assert sample.pos_inds.numel() == 16
    assert int((sample.matched_gt[sample.pos_inds] == 1).sum()) == 5
    assert (sample.labels[sample.pos_inds] == GT_LABELS[sample.matched_gt[sample.pos_inds]]).all()


def test_authors_binning_leaves_top_bin_to_the_top_up() -> None:
    heads = shared_heads(True, "authors")
    props = torch.cat([crafted_proposals(), GT_BOXES])  # as after add_gt_proposals: max IoU 1
    torch.manual_seed(0)
    sample = heads.sample_proposals(props, GT_BOXES, GT_LABELS)
    low, mid, high = band_counts(sample.max_overlaps, sample.neg_inds)
    # bins [0, 1/3), [1/3, 2/3), [2/3, 1): 16 + 16 + 0, then 16 uniformly from the IoU pool
    assert sample.neg_inds.numel() == 48 and low + mid >= 16 and high >= 16


def test_random_sampling_baseline_follows_the_population() -> None:
    heads = shared_heads(False)
    torch.manual_seed(0)
    sample = heads.sample_proposals(crafted_proposals(), GT_BOXES, GT_LABELS)
    counts = band_counts(sample.max_overlaps, sample.neg_inds)
    assert sum(counts) == 48 and counts[0] >= 30  # ~48 * 300 / 360 = 40 expected
    assert sample.pos_inds.numel() == 16
    assert int((sample.matched_gt[sample.pos_inds] == 1).sum()) < 5  # ~0.76 expected


@pytest.mark.parametrize("iou_balanced", [False, True])
def test_torchvision_quotas_with_few_candidates(iou_balanced: bool) -> None:
    heads = shared_heads(iou_balanced)
    few_pos = crafted_proposals(num_pos_a=2, num_pos_b=1)
    sample = heads.sample_proposals(few_pos, GT_BOXES, GT_LABELS)
    assert sample.pos_inds.numel() == 3 and sample.neg_inds.numel() == 64 - 3
    few_neg = few_pos[-10:]  # 7 negatives, 3 positives: everything is taken
    sample = heads.sample_proposals(few_neg, GT_BOXES, GT_LABELS)
    assert (sample.pos_inds.numel(), sample.neg_inds.numel()) == (3, 7)
    assert len(set(sample.neg_inds.tolist())) == 7


def test_select_training_samples_adds_gt_and_encodes_targets() -> None:
    heads = shared_heads(True)
    far = torch.tensor([[500.0, 500.0, 540.0, 560.0]]).repeat(20, 1)  # IoU 0 with every gt
    tg = [{"boxes": GT_BOXES, "labels": GT_LABELS},
          {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    rois, matched, labels, deltas = heads.select_training_samples([far, far.clone()], tg)
    # image 0: the only positives are the added gt boxes, with zero regression targets
    pos = labels[0] > 0
    torch.testing.assert_close(rois[0][pos], GT_BOXES)
    assert labels[0][pos].tolist() == GT_LABELS.tolist() and matched[0][pos].tolist() == [0, 1]
    torch.testing.assert_close(deltas[0][pos], torch.zeros(2, 4))
    assert labels[0].numel() == 22
    # image 1 has no gt: every RoI is a negative
    assert labels[1].numel() == 20 and (labels[1] == 0).all() and (matched[1] == 0).all()
    assert deltas[1].shape == (20, 4)


def test_sampling_is_reproducible_under_manual_seed() -> None:
    heads = shared_heads(True)
    props = crafted_proposals()
    torch.manual_seed(7)
    first = heads.sample_proposals(props, GT_BOXES, GT_LABELS)
    torch.manual_seed(7)
    second = heads.sample_proposals(props, GT_BOXES, GT_LABELS)
    assert torch.equal(first.pos_inds, second.pos_inds)
    assert torch.equal(first.neg_inds, second.neg_inds)


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"num_classes": True},
        {"num_classes": 2.0},
        {"backbone": "vgg16"},
        {"norm": "ln"},
        {"binning": "mmdet"},
        {"num_bins": 0},
        {"fpn_channels": 0},
        {"balanced_l1_options": {"delta": 1.0}},
        {"balanced_l1_options": {"alpha": 0.0}},
        {"balanced_l1_options": {"beta": float("nan")}},
        {"smooth_l1_beta": 0.0},
        {"smooth_l1_beta": float("nan")},
        {"floor_thr": 0.5},
        {"representation_size": 0},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        libra_rcnn(**{"num_classes": K, **kwargs})


def test_masks_are_not_supported() -> None:
    heads = tiny_model(False, False, False).roi_heads
    heads.mask_roi_pool, heads.mask_head, heads.mask_predictor = (nn.Identity() for _ in "abc")
    with pytest.raises(NotImplementedError, match="box detection only"):
        heads({}, [torch.zeros(1, 4)], [(SIDE, SIDE)])
    with pytest.raises(NotImplementedError, match="box detection only"):
        LibraRoIHeads.from_roi_heads(heads, pos_sampler=RandomSampler(),
                                     neg_sampler=RandomSampler(), box_loss=F.l1_loss)
