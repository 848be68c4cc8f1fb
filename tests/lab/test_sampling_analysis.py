"""imbalance.lab.sampling_analysis: scored proposals, OHEM choice, inclusion frequencies."""

from __future__ import annotations

import pytest
import torch

from imbalance.data import CocoDetection
from imbalance.lab.sampling_analysis import (
    expected_bin_inclusion,
    hardest,
    inclusion_frequency,
    scored_proposals,
)
from imbalance.lab.snapshot import rpn_proposals
from imbalance.models import libra_rcnn
from imbalance.sampling import IoUBalancedNegativeSampler, RandomSampler, iou_bin_counts

SMALL = {"fpn_channels": 16, "min_size": 96, "max_size": 96, "rpn_pre_nms_top_n_test": 200,
         "rpn_post_nms_top_n_test": 100}


pytestmark = pytest.mark.usefixtures("one_thread")


def population(groups: list[tuple[float, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives with ``n`` at each IoU, then two positives that are not candidates."""
    ious = [iou for iou, n in groups for _ in range(n)] + [0.7, 1.0]
    mask = torch.ones(len(ious), dtype=torch.bool)
    mask[-2:] = False
    return torch.tensor(ious), mask


# ------------------------------------------------------------------------------------ hardest
def test_hardest_takes_top_loss_candidates_only():
    loss = torch.tensor([0.1, 5.0, float("nan"), 2.0, 3.0, 9.0])
    mask = torch.tensor([True, True, False, True, True, False])
    assert hardest(loss, mask, 2).tolist() == [1, 4]
    assert hardest(loss, mask, 10).tolist() == [0, 1, 3, 4]
    assert hardest(loss, mask, 0).numel() == 0
    ties = torch.ones(5)
    assert hardest(ties, torch.ones(5, dtype=torch.bool), 2).tolist() == [0, 1]


# ------------------------------------------------------------------------ inclusion frequency
def test_inclusion_frequency_random_is_uniform_and_seeded():
    ious, mask = population([(0.1, 200)])
    freq = inclusion_frequency(RandomSampler(), ious, mask, 50, draws=400, seed=3)
    assert freq.dtype == torch.float64 and freq.shape == ious.shape
    assert torch.all(freq[~mask] == 0)
    assert abs(float(freq[mask].mean()) - 0.25) < 1e-12  # exactly 50 per draw
    assert float((freq[mask] - 0.25).abs().max()) < 0.12
    again = inclusion_frequency(RandomSampler(), ious, mask, 50, draws=400, seed=3)
    assert torch.equal(freq, again)
    with pytest.raises(ValueError):
        inclusion_frequency(RandomSampler(), ious, mask, 50, draws=0)


# -------------------------------------------------------------------- expected bin inclusion
@pytest.mark.parametrize("binning", ["paper", "authors"])
def test_expected_bin_inclusion_matches_monte_carlo(binning):
    ious, mask = population([(0.05, 600), (0.2, 100), (0.4, 30), (0.45, 1)])
    sampler = IoUBalancedNegativeSampler(3, binning=binning)
    counts = iou_bin_counts(ious, mask, 3, -1, binning)
    expected = expected_bin_inclusion(counts, 300)
    freq = inclusion_frequency(sampler, ious, mask, 300, draws=300)
    bin_of = {"paper": [(0.0, 0.15), (0.15, 0.3), (0.3, 0.46)],
              "authors": [(0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0)]}[binning]
    for k, (lo, hi) in enumerate(bin_of):
        members = mask & (ious >= lo) & (ious < hi)
        if counts[k] == 0:
            assert torch.isnan(expected[k]) and members.sum() == 0
            continue
        assert int(members.sum()) == int(counts[k])
        assert abs(float(freq[members].mean()) - float(expected[k])) < 0.01
    # the expectation accounts for every draw: sum_k p_k M_k = N
    valid = ~torch.isnan(expected)
    assert abs(float((expected[valid] * counts[valid]).sum()) - 300) < 1e-9


def test_expected_bin_inclusion_closed_form():
    # quota 100: bin 2 short by 70, taken up uniformly by the 600 + 500 left in bins 0 and 1
    p = expected_bin_inclusion(torch.tensor([700, 600, 30]), 300)
    top_up = 70 / 1100
    torch.testing.assert_close(p, torch.tensor([100 / 700 + 600 / 700 * top_up,
                                                100 / 600 + 500 / 600 * top_up, 1.0],
                                               dtype=torch.float64))
    few = expected_bin_inclusion(torch.tensor([3, 0, 2]), 10)  # all taken
    assert few[0] == 1 and torch.isnan(few[1]) and few[2] == 1


# -------------------------------------------------------------------------- scored proposals
def test_scored_proposals_match_the_training_labels(tiny_root):
    torch.manual_seed(0)
    model = libra_rcnn(6, "resnet18", norm="gn", **SMALL)
    data = CocoDetection(tiny_root, "val")
    model.train()
    scored = scored_proposals(model, data, num_images=2)
    assert model.training and len(scored) == 2
    plain = rpn_proposals(model, data, num_images=2)
    for s, p in zip(scored, plain, strict=True):
        r = len(s.boxes)
        assert all(t.shape[0] == r for t in s)
        assert torch.equal(s.boxes[~s.is_gt], p.boxes) and torch.equal(s.boxes[s.is_gt],
                                                                      p.gt_boxes)
        torch.testing.assert_close(s.max_overlaps[s.is_gt], torch.ones(int(s.is_gt.sum())))
        with torch.random.fork_rng():
            sample = model.roi_heads.sample_proposals(s.boxes, p.gt_boxes, p.gt_labels)
        assert torch.equal(s.labels, sample.labels)
        assert torch.equal(torch.isnan(s.loss), s.labels < 0)
        neg = s.labels == 0
        torch.testing.assert_close(s.loss[neg], -torch.log(s.background_prob[neg]),
                                   rtol=1e-4, atol=1e-5)
        assert bool(((s.background_prob >= 0) & (s.background_prob <= 1)).all())
    without = scored_proposals(model, data, num_images=1, add_gt=False)[0]
    assert not without.is_gt.any() and len(without.boxes) == len(plain[0].boxes)
