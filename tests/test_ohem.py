"""Online hard example mining: one image's choice, by hand, and RetinaNet trained on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, nms

from imbalance.models import retinanet
from imbalance.models.retinanet import anchor_targets
from imbalance.ohem import OHEM, hard_examples


def _boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = 5 + torch.rand(n, 2, generator=g) * 30
    return torch.cat([xy, xy + wh], 1)


def test_without_nms_it_is_the_highest_losses_of_the_candidates():
    loss = torch.tensor([0.3, 2.0, float("nan"), 1.5, 0.1, 9.0, 1.5])
    candidate = torch.tensor([True, True, True, True, True, False, True])
    chosen = hard_examples(loss, _boxes(7), candidate, torch.zeros(7, dtype=torch.bool), 3,
                           nms_threshold=None)
    assert chosen.tolist() == [1, 3, 6]  # 9.0 is no candidate, NaN never chosen, ties by index
    everything = hard_examples(loss, _boxes(7), candidate, torch.zeros(7, dtype=torch.bool), 99,
                               nms_threshold=None)
    assert everything.tolist() == [0, 1, 3, 4, 6]


def test_nms_keeps_the_higher_loss_of_two_overlapping_examples():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [50.0, 50, 60, 60]])
    loss = torch.tensor([1.0, 3.0, 0.5])
    no = torch.zeros(3, dtype=torch.bool)
    assert box_iou(boxes[:1], boxes[1:2]).item() > 0.7
    assert hard_examples(loss, boxes, ~no, no, 2, nms_threshold=0.7).tolist() == [1, 2]
    assert hard_examples(loss, boxes, ~no, no, 2, nms_threshold=None).tolist() == [0, 1]


def test_nms_choice_matches_a_greedy_loop():
    n = 200
    boxes, loss = _boxes(n, 1), torch.rand(n, generator=torch.Generator().manual_seed(2))
    candidate = torch.rand(n, generator=torch.Generator().manual_seed(3)) > 0.2
    chosen = hard_examples(loss, boxes, candidate, torch.zeros(n, dtype=torch.bool), 30,
                           nms_threshold=0.5)
    kept: list[int] = []  # greedy NMS by hand, highest loss first
    for i in sorted(candidate.nonzero().squeeze(1).tolist(), key=lambda i: -loss[i].item()):
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= 0.5 for j in kept):
            kept.append(i)
    assert chosen.tolist() == sorted(kept[:30])


def test_the_ratio_caps_positives_and_negatives():
    n = 100
    loss = torch.arange(n, dtype=torch.float32)
    positive = torch.zeros(n, dtype=torch.bool)
    positive[::10] = True  # 10 positives, the ranks among the losses spread out
    everyone = torch.ones(n, dtype=torch.bool)
    chosen = hard_examples(loss, _boxes(n), everyone, positive, 16, nms_threshold=None,
                           neg_pos_ratio=3)
    pos, neg = chosen[positive[chosen]], chosen[~positive[chosen]]
    assert pos.numel() == 4 and neg.numel() == 12
    assert pos.tolist() == [60, 70, 80, 90] and neg.min() == 87  # the hardest of each
    one_positive = torch.zeros(n, dtype=torch.bool)
    one_positive[5] = True
    chosen = hard_examples(loss, _boxes(n), everyone, one_positive, 16, nms_threshold=None,
                           neg_pos_ratio=3)
    assert chosen.numel() == 4 and 5 in chosen.tolist()  # 1 positive, then 3 negatives
    none = hard_examples(loss, _boxes(n), everyone, torch.zeros(n, dtype=torch.bool), 16,
                         nms_threshold=None, neg_pos_ratio=3)
    assert none.numel() == 3  # no positive: 3 negatives, as for one


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"nms_threshold": 0.0}, "nms_threshold"), ({"neg_pos_ratio": -1.0}, "neg_pos_ratio"),
    ({"neg_pos_ratio": float("inf")}, "neg_pos_ratio"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OHEM(**kwargs)
    with pytest.raises(ValueError, match="shape"):
        hard_examples(torch.zeros(3), torch.zeros(3, 4), torch.ones(2, dtype=torch.bool),
                      torch.zeros(3, dtype=torch.bool), 2)


# --------------------------------------------------------------------- in RetinaNet's head
def _retinanet(**kw):
    torch.manual_seed(0)
    return retinanet(4, cls_loss="ce", fpn_channels=16, min_size=96, max_size=96, **kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 96, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 42.0, 50.0], [60.0, 64.0, 90.0, 90.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[30.0, 30.0, 80.0, 85.0]]), "labels": torch.tensor([2])}]
    return images, targets


def test_retinanet_with_ohem_trains_on_the_hard_minibatch_only():
    images, targets = _batch()
    plain, mined = _retinanet(), _retinanet(ohem={"batch_size": 32})
    assert mined.head.ohem == OHEM(batch_size=32)
    plain_losses, mined_losses = plain(images, targets), mined(images, targets)
    # the box loss does not change
    torch.testing.assert_close(mined_losses["bbox_regression"], plain_losses["bbox_regression"])
    # the classification loss by hand: per image, CE of each valid anchor summed over K, NMS
    # among the anchors at 0.5, the 32 highest; summed over the chosen, over their positives
    out = mined.anchor_outputs(images, targets)
    t = out.targets
    images_t, _ = mined.transform(images, [dict(x) for x in targets])
    feats = list(mined.backbone(images_t.tensors).values())
    anchors = mined.anchor_generator(images_t, feats)
    ce = F.binary_cross_entropy_with_logits(out.logits, t.cls_targets, reduction="none")
    total, positives = 0.0, 0
    for i in range(2):
        inds = hard_examples(ce[i].sum(-1).detach(), anchors[i], t.valid[i], t.positive[i], 32)
        assert inds.numel() == 32 and t.valid[i, inds].all()
        total = total + ce[i, inds].sum()
        positives += int(t.positive[i, inds].sum())
    assert positives >= 1
    torch.testing.assert_close(mined_losses["classification"], total / positives)
    # every valid anchor when the minibatch holds them all and nothing is suppressed
    everything = _retinanet(ohem={"batch_size": 10**6, "nms_threshold": 1.0})
    torch.testing.assert_close(everything(images, targets)["classification"],
                               plain_losses["classification"])


def test_only_the_chosen_anchors_get_a_gradient():
    images, targets = _batch()
    model = _retinanet(ohem={"batch_size": 8})
    images_t, targets_t = model.transform(images, [dict(x) for x in targets])
    feats = list(model.backbone(images_t.tensors).values())
    out = model.head(feats)
    out["cls_logits"].retain_grad()
    anchors = model.anchor_generator(images_t, feats)
    model.compute_loss(targets_t, out, anchors)["classification"].backward()
    t = anchor_targets(targets_t, anchors, model.match(targets_t, anchors), 4)
    chosen = model.head.hard_example_mask(out["cls_logits"], t, anchors)
    assert int(chosen.sum()) == 16 and not chosen[~t.valid].any()
    touched = out["cls_logits"].grad.abs().sum(-1) > 0
    assert torch.equal(touched, chosen)


def test_ohem_is_refused_with_ghm_c():
    with pytest.raises(ValueError, match="GHM-C"):
        retinanet(4, cls_loss="ghm_c", fpn_channels=16, ohem={})


@pytest.mark.parametrize("ratio", [None, 3.0])
def test_nms_on_a_prefix_equals_nms_over_every_example(ratio):
    """The minibatch comes from NMS over a growing prefix of the examples by loss; it must
    equal the choice made after NMS over all of them (ties in the loss included)."""
    n = 3000
    g = torch.Generator().manual_seed(4)
    boxes = _boxes(n, 5)
    loss = torch.randint(0, 50, (n,), generator=g).float()  # many ties
    positive = torch.rand(n, generator=g) < 0.05
    candidate = torch.rand(n, generator=g) > 0.1
    for batch_size in (8, 64, 512):
        got = hard_examples(loss, boxes, candidate, positive, batch_size, 0.3, ratio)
        order = candidate.nonzero().squeeze(1)
        order = order[torch.sort(loss[order], descending=True, stable=True).indices]
        ranks = torch.arange(order.numel(), 0, -1, dtype=torch.float32)
        survivors = order[nms(boxes[order], ranks, 0.3)]
        if ratio is None:
            expected = survivors[:batch_size]
        else:
            pos, neg = survivors[positive[survivors]], survivors[~positive[survivors]]
            k = min(pos.numel(), batch_size // 4)
            expected = torch.cat([pos[:k], neg[:min(neg.numel(), batch_size - k, 3 * max(1, k))]])
        assert got.tolist() == expected.sort().values.tolist()


def test_the_mask_is_each_images_choice():
    g = torch.Generator().manual_seed(6)
    loss = torch.rand(3, 50, generator=g)
    boxes = torch.stack([_boxes(50, s) for s in range(3)])
    candidate = torch.rand(3, 50, generator=g) > 0.2
    positive = torch.rand(3, 50, generator=g) > 0.9
    ohem = OHEM(7, 0.5)
    mask = ohem.mask(loss, boxes, candidate, positive)
    assert mask.shape == (3, 50) and mask.dtype == torch.bool
    for i in range(3):
        assert mask[i].nonzero().squeeze(1).tolist() == \
            ohem.select(loss[i], boxes[i], candidate[i], positive[i]).tolist()
    assert torch.equal(ohem.mask(loss, list(boxes), candidate, positive), mask)
