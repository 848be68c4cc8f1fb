"""imbalance.lab.sampling_analysis: scored proposals, OHEM choice, inclusion frequencies."""

from __future__ import annotations

import pytest
import torch

from imbalance.data import CocoDetection
from imbalance.lab.sampling_analysis import (
    bin_inclusion,
    expected_bin_inclusion,
    hard_recall,
    hardest,
    inclusion_frequency,
    mean_per_interval,
    positives_per_object,
    scored_proposals,
)
from imbalance.lab.snapshot import rpn_proposals
from imbalance.models import libra_rcnn
from imbalance.sampling import (
    InstanceBalancedPositiveSampler,
    IoUBalancedNegativeSampler,
    RandomSampler,
    iou_bin_counts,
)

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


# ------------------------------------------------------------- per-bin tables, intervals, recall
def test_bin_inclusion_agrees_with_its_formulas_when_every_bin_is_full():
    ious, mask = population([(0.0, 300), (0.2, 60), (0.4, 30)])
    table = bin_inclusion(ious, mask, 30, num_bins=3, draws=400)
    assert table.counts.tolist() == [300, 60, 30] and len(table.edges) == 4
    torch.testing.assert_close(table.paper, 30 / (3 * table.counts.double()))
    # every bin holds at least N/K = 10: the quota alone fills the draw, so both formulas agree
    torch.testing.assert_close(table.closed_form, table.paper)
    torch.testing.assert_close(table.measured, table.paper, atol=0, rtol=1e-12)
    assert table.frequency.shape == ious.shape and float(table.frequency[~mask].sum()) == 0


def test_bin_inclusion_measures_the_top_up_of_a_short_bin():
    ious, mask = population([(0.0, 100), (0.2, 5), (0.4, 20)])
    table = bin_inclusion(ious, mask, 30, num_bins=3, draws=400)
    assert float(table.measured[1]) == 1.0  # the short bin is taken whole
    torch.testing.assert_close(table.measured, table.closed_form, atol=0.03, rtol=0)
    assert float(table.measured[0]) > 1.2 * float(table.paper[0])  # the top-up lands here


def test_mean_per_interval_averages_inside_each_sub_interval():
    ious = torch.tensor([0.05, 0.15, 0.15, 0.55, 0.9, 0.3])
    mask = torch.tensor([True, True, True, True, True, False])
    freq = torch.tensor([1.0, 0.2, 0.4, 0.5, 0.7, 99.0], dtype=torch.float64)
    fine, means = mean_per_interval(ious, freq, mask, torch.tensor([0.0, 0.5, 1.0]), splits=2)
    torch.testing.assert_close(fine, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(means[:2], torch.tensor([(1.0 + 0.2 + 0.4) / 3, float("nan")],
                                                       dtype=torch.float64), equal_nan=True)
    torch.testing.assert_close(means[2:], torch.tensor([0.5, 0.7], dtype=torch.float64))
    with pytest.raises(ValueError, match="splits"):
        mean_per_interval(ious, freq, mask, torch.tensor([0.0, 1.0]), splits=0)


def test_hard_recall_is_the_mean_share_of_the_hard_set_taken():
    hard = [torch.tensor([1, 2, 3, 4]), torch.tensor([7, 8])]
    chosen = [torch.tensor([1, 2, 9]), torch.tensor([0, 7, 8])]
    assert hard_recall(chosen, hard) == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert hard_recall(hard, hard) == 1.0
    with pytest.raises(ValueError, match="one index tensor per image"):
        hard_recall(chosen[:1], hard)


def test_positives_per_object_random_follows_coverage_instance_balanced_evens_it():
    # one large object covered by 60 positives, three small ones by 5 each; 20 to take
    matched = torch.tensor([0] * 60 + [1] * 5 + [2] * 5 + [3] * 5 + [0] * 10)
    positive = torch.ones(85, dtype=torch.bool)
    positive[75:] = False  # the last ten are negatives near object 0
    rnd = positives_per_object(RandomSampler(), matched, positive, 20, draws=400)
    ib = positives_per_object(InstanceBalancedPositiveSampler(), matched, positive, 20,
                              draws=400)
    assert rnd.sum() == pytest.approx(20) and ib.sum() == pytest.approx(20)
    assert rnd[0] == pytest.approx(20 * 60 / 75, abs=0.5)  # in proportion to coverage
    # the cap is round(20 / 4) + 1 = 6 per object: the small objects keep all 5, the large 6 +
    # nothing to top up (6 + 15 = 21 > 20, so one is dropped at random)
    assert ib[0] < 7 and bool((ib[1:] > 4.5).all())
    assert torch.equal(positives_per_object(RandomSampler(), matched, positive, 20, 3, seed=1),
                       positives_per_object(RandomSampler(), matched, positive, 20, 3, seed=1))
    with pytest.raises(ValueError, match="draws"):
        positives_per_object(RandomSampler(), matched, positive, 20, draws=0)
