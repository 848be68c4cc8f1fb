"""RetinaNet's loss seam: each head loss equals the loss library applied by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou, generalized_box_iou_loss

from imbalance.data import CocoDetection
from imbalance.data.stats import AnchorConfig, anchor_statistics
from imbalance.losses import asl1_loss, balanced_l1_loss
from imbalance.losses.reference import ghm_c_loss_loop, ghm_r_loss_loop
from imbalance.models import BOX_LOSSES, CLS_LOSSES, build_model, retinanet

K = 4
SIZE = 128


def _model(cls_loss: str = "focal", box_loss: str = "smooth_l1", **kw):
    torch.manual_seed(0)
    kw.setdefault("fpn_channels", 32)
    return retinanet(K, cls_loss=cls_loss, box_loss=box_loss, min_size=SIZE, max_size=SIZE, **kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 42.0, 50.0], [60.0, 64.0, 100.0, 90.0],
                                [70.0, 8.0, 86.0, 22.0]]),
         "labels": torch.tensor([1, 3, 4])},
        {"boxes": torch.tensor([[30.0, 30.0, 95.0, 100.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def _by_hand(model, images, targets):
    """Head outputs, and targets matched independently of the model's own code."""
    images_t, targets_t = model.transform(images, [dict(t) for t in targets])
    feats = list(model.backbone(images_t.tensors).values())
    out = model.head(feats)
    anchors = model.anchor_generator(images_t, feats)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    logits, cls_t, deltas, pos_anchors, pos_boxes = [], [], [], [], []
    for i, t in enumerate(targets_t):
        m = matcher(box_iou(t["boxes"], anchors[i]))
        onehot = F.one_hot(t["labels"][m.clamp(min=0)] - 1, K).float() * (m >= 0)[:, None]
        keep = m != -2
        logits.append(out["cls_logits"][i][keep])
        cls_t.append(onehot[keep])
        deltas.append(out["bbox_regression"][i][m >= 0])
        pos_anchors.append(anchors[i][m >= 0])
        pos_boxes.append(t["boxes"][m[m >= 0]])
    cat = torch.cat
    return cat(logits), cat(cls_t), cat(deltas), cat(pos_anchors), cat(pos_boxes)


@pytest.mark.parametrize("cls_loss", CLS_LOSSES)
def test_classification_loss_equals_library_by_hand(cls_loss):
    opts = {"momentum": 0.0} if cls_loss == "ghm_c" else None
    model = _model(cls_loss, cls_options=opts, ghm_scope="batch")
    images, targets = _batch()
    losses = model(images, targets)
    logits, t, *_ , boxes = _by_hand(model, images, targets)
    num_pos = max(1, len(boxes))
    assert num_pos > 4
    if cls_loss == "ce":
        expected = F.binary_cross_entropy_with_logits(logits, t, reduction="sum") / num_pos
    elif cls_loss == "alpha_ce":
        w = 0.75 * t + 0.25 * (1 - t)
        expected = (w * F.binary_cross_entropy_with_logits(logits, t, reduction="none")).sum()
        expected = expected / num_pos
    elif cls_loss == "focal":
        expected = torchvision.ops.sigmoid_focal_loss(logits, t, reduction="sum") / num_pos
    else:
        expected = ghm_c_loss_loop(logits, t, bins=30)
    torch.testing.assert_close(losses["classification"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("box_loss", BOX_LOSSES)
def test_box_loss_equals_library_by_hand(box_loss):
    opts = {"momentum": 0.0} if box_loss == "ghm_r" else None
    model = _model("focal", box_loss, box_options=opts, ghm_scope="batch")
    images, targets = _batch()
    losses = model(images, targets)
    _, _, deltas, anchors, boxes = _by_hand(model, images, targets)
    coder = torchvision.models.detection._utils.BoxCoder((1.0, 1.0, 1.0, 1.0))
    target = coder.encode_single(boxes, anchors)
    n = len(boxes)
    expected = {
        "l1": lambda: (deltas - target).abs().sum() / n,
        "smooth_l1": lambda: F.smooth_l1_loss(deltas, target, beta=0.11, reduction="sum") / n,
        "asl1": lambda: asl1_loss(deltas, target, mu=0.02, reduction="sum") / n,
        "ghm_r": lambda: 10.0 * ghm_r_loss_loop(deltas, target, mu=0.02, bins=10),
        "balanced_l1": lambda: balanced_l1_loss(deltas, target, beta=0.11, reduction="sum") / n,
        "giou": lambda: generalized_box_iou_loss(coder.decode_single(deltas, anchors), boxes,
                                                 reduction="sum") / n,
    }[box_loss]()
    torch.testing.assert_close(losses["bbox_regression"], expected, rtol=1e-5, atol=1e-6)


def test_losses_are_normalised_by_the_positives_of_the_batch():
    """(S1 + S2) / (P1 + P2), not torchvision's mean over images of S_i / P_i."""
    # GroupNorm: an image's outputs do not depend on the batch. Without the prior, negatives
    # carry most of the loss, so the per-image mean differs from the batch normalisation.
    model = _model("focal", "l1", prior_prob=None)
    images, targets = _batch()
    both = model(images, targets)
    singles, positives = [], []
    for i in range(2):
        singles.append(model(images[i:i + 1], targets[i:i + 1]))
        positives.append(len(_by_hand(model, images[i:i + 1], targets[i:i + 1])[-1]))
    assert positives[0] != positives[1]
    for key in ("classification", "bbox_regression"):
        sums = sum(s[key] * p for s, p in zip(singles, positives, strict=True))
        torch.testing.assert_close(both[key], sums / sum(positives), rtol=1e-5, atol=1e-6)
    per_image_mean = sum(s["classification"] for s in singles) / 2
    assert not torch.isclose(both["classification"], per_image_mean, rtol=1e-2)


def test_positive_anchors_agree_with_the_benchmark_statistics(tiny_root):
    """The model's matching and imbalance.data.stats count the same positives and negatives."""
    data = CocoDetection(tiny_root, "val")
    model = retinanet(data.num_classes, fpn_channels=32, min_size=SIZE, max_size=SIZE)
    stats = anchor_statistics(data.annotation_file, AnchorConfig())
    for i in range(3):
        image, target = data[i]
        out = model.anchor_outputs([image], [target])
        row = list(stats.image_ids).index(target["image_id"])
        assert int(out.targets.positive.sum()) == int(stats.positives[row])
        negatives = int((out.targets.matched == -1).sum())
        assert negatives == int(stats.negatives[row])


def test_prior_probability_sets_the_initial_scores():
    images, _ = _batch()
    for prior, expected in [(0.01, 0.01), (None, 0.5)]:
        model = _model(prior_prob=prior).eval()
        bias = model.head.classification_head.cls_logits.bias
        torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, expected))
        with torch.no_grad():
            images_t, _ = model.transform(images)
            logits = model.head(list(model.backbone(images_t.tensors).values()))["cls_logits"]
        assert abs(torch.sigmoid(logits).mean().item() - expected) < 0.05 * expected + 1e-3
    with pytest.raises(ValueError, match="prior_prob"):
        _model(prior_prob=1.5)


def test_ghm_histograms_live_in_the_state_dict_and_advance_in_training():
    model = _model("ghm_c", "ghm_r", ghm_scope="batch")
    keys = model.state_dict().keys()
    assert "head.cls_loss.ghm.acc_sum" in keys and "head.box_loss.ghm.acc_sum" in keys
    images, targets = _batch()
    model(images, targets)
    valid = len(_by_hand(model, images, targets)[0])
    # one call per iteration over the batch: EMA (1 - m) * count sums to (1 - m) * valid * K
    acc = model.head.cls_loss.ghm.acc_sum
    torch.testing.assert_close(acc.sum(), torch.tensor((1 - 0.75) * valid * K))


def _random_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, SIZE, SIZE, generator=g))
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * SIZE * 0.6
        wh = 8 + torch.rand(n, 2, generator=g) * SIZE * 0.4
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=SIZE - 1)], 1),
                        "labels": torch.randint(1, K + 1, (n,), generator=g)})
    return images, targets


def test_level_scope_equals_a_loop_over_levels_with_one_shared_ema():
    """The authors' wiring: per pyramid level, the loop-over-bins reference, one EMA shared by
    the five level calls of an iteration, the level losses summed; over several steps."""
    model = _model("ghm_c", "ghm_r")
    assert model.head.ghm_scope == "level"
    acc_c, acc_r = torch.zeros(30), torch.zeros(10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(3):
        images, targets = _random_batch(step)
        with torch.no_grad():
            out = model.anchor_outputs(images, targets)
        levels = model.head.anchor_levels().expand_as(out.targets.valid)
        assert len(model.head.level_sizes) == 5 and levels.shape == out.targets.valid.shape
        t = out.targets
        cls_level, box_level = levels[t.valid], levels[t.positive]
        logits, cls_t = out.logits[t.valid], t.cls_targets[t.valid]
        deltas = out.deltas[t.positive]
        expected_cls = sum(ghm_c_loss_loop(logits[cls_level == k], cls_t[cls_level == k],
                                           bins=30, acc_sum=acc_c, momentum=0.75)
                           for k in range(5))
        expected_box = sum(10.0 * ghm_r_loss_loop(deltas[box_level == k],
                                                  out.box_targets[box_level == k], mu=0.02,
                                                  bins=10, acc_sum=acc_r, momentum=0.7)
                           for k in range(5))
        losses = model(images, targets)
        torch.testing.assert_close(losses["classification"], expected_cls, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses["bbox_regression"], expected_box, rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(model.head.cls_loss.ghm.acc_sum, acc_c)
        torch.testing.assert_close(model.head.box_loss.ghm.acc_sum, acc_r)
        assert (box_level.unique().numel() > 1) and (cls_level.unique().numel() == 5)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()


def test_the_two_scopes_differ_for_ghm_only():
    images, targets = _batch()
    ghm = {scope: _model("ghm_c", "ghm_r", ghm_scope=scope)(images, targets)
           for scope in ("level", "batch")}
    for key in ("classification", "bbox_regression"):
        assert not torch.isclose(ghm["level"][key], ghm["batch"][key], rtol=1e-3)
    focal = {scope: _model("focal", "smooth_l1", ghm_scope=scope)(images, targets)
             for scope in ("level", "batch")}
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(focal["level"][key], focal["batch"][key])


def test_detections_are_labelled_one_to_k():
    model = _model(score_thresh=0.0, detections_per_img=50).eval()
    images, _ = _batch()
    with torch.no_grad():
        dets = model(images)
    labels = torch.cat([d["labels"] for d in dets])
    assert labels.numel() > 0
    assert labels.min() >= 1 and labels.max() <= K


def test_training_step_reduces_the_loss():
    model = _model("focal", "smooth_l1")
    images, targets = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first = None
    for _ in range(8):
        loss = sum(model(images, targets).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < first


def test_images_without_boxes_give_finite_losses():
    model = _model("ghm_c", "giou")
    images, _ = _batch()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["bbox_regression"].item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cls_loss": "softmax"}, "classification loss"), ({"box_loss": "iou"}, "box loss"),
     ({"cls_options": {"gama": 2}}, "gama"), ({"anchor_scale": 0.3}, "anchor_scale"),
     ({"backbone": "vgg16"}, "backbone"), ({"norm": "frozen_bn"}, "norm"),
     ({"ghm_scope": "image"}, "ghm_scope")],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        retinanet(K, **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        retinanet(0)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("yolo", K)


def test_ghm_training_statistics_match_a_hand_computation():
    from imbalance.losses.ghm import ghm_c_weights

    model = _model("ghm_c", "ghm_r", ghm_scope="batch", cls_options={"momentum": 0.0})
    images, targets = _batch()
    model(images, targets)
    stats = model.training_statistics()
    logits, t, *_ = _by_hand(model, images, targets)
    with torch.no_grad():
        g = (torch.sigmoid(logits) - t).abs()
        w = ghm_c_weights(logits, t, bins=30)
    share = ((w * g)[t > 0].sum() / (w * g).sum()).item()
    bins = torch.bucketize(g, torch.arange(1, 30) / 30, right=True).unique().numel()
    assert stats["ghm_c_positive_grad"] == pytest.approx(share, rel=1e-4)
    assert stats["ghm_c_bins"] == bins
    assert 1 <= stats["ghm_r_bins"] <= 10 and "ghm_r_positive_grad" not in stats
    assert model.training_statistics() == {}  # read once per iteration
    model(images, targets)
    level = _model("ghm_c", "ghm_r")
    level(images, targets)
    per_level = level.training_statistics()
    assert 1 <= per_level["ghm_c_bins"] <= 30 and 0 < per_level["ghm_c_positive_grad"] < 1
    assert _model().training_statistics() == {}
