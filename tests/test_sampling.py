"""Tests for imbalance.sampling: IoU-balanced negatives, instance-balanced positives, random."""

from __future__ import annotations

import pytest
import torch

from imbalance.sampling import (
    InstanceBalancedPositiveSampler,
    IoUBalancedNegativeSampler,
    RandomSampler,
    Sampler,
    iou_bin_counts,
    iou_bin_edges,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def proposals(groups: list[tuple[float, int]], positives: tuple[float, ...] = (0.7, 1.0)):
    """max_overlaps with ``n`` negatives at each IoU, then non-candidate positives."""
    ious = [iou for iou, n in groups for _ in range(n)]
    mask = [True] * len(ious) + [False] * len(positives)
    return torch.tensor(ious + list(positives)), torch.tensor(mask)


def as_mask(inds: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[inds] = True
    return m


def check_valid(inds: torch.Tensor, mask: torch.Tensor, num_expected: int) -> None:
    assert inds.dtype == torch.int64 and inds.dim() == 1
    assert inds.numel() == min(num_expected, int(mask.sum()))
    assert inds.unique().numel() == inds.numel()
    assert bool(mask[inds].all())
    assert torch.equal(inds, inds.sort().values)


# ------------------------------------------------------------------------------- IoU bins
# 600 easy negatives at 0.05, 100 at 0.2, 101 hard ones at 0.4/0.45; positives at 0.7 and 1.0.
BALANCED = [(0.05, 600), (0.2, 100), (0.4, 100), (0.45, 1)]


def test_bin_edges_paper_vs_authors():
    ious, mask = proposals(BALANCED)
    paper = iou_bin_edges(ious, mask, 3, -1, "paper")
    authors = iou_bin_edges(ious, mask, 3, -1, "authors")
    torch.testing.assert_close(paper, torch.tensor([0.0, 0.15, 0.3, 0.45]))
    torch.testing.assert_close(authors, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    assert iou_bin_counts(ious, mask, 3, -1, "paper").tolist() == [600, 100, 101]
    assert iou_bin_counts(ious, mask, 3, -1, "authors").tolist() == [700, 101, 0]


def test_paper_equal_quota_per_bin():
    ious, mask = proposals(BALANCED)
    sampler = IoUBalancedNegativeSampler(num_bins=3, binning="paper")
    out = sampler.sample_with_breakdown(ious, mask, 90, gen())
    check_valid(out.inds, mask, 90)
    assert [b.numel() for b in out.bins] == [30, 30, 30]
    assert out.iou_extra.numel() == out.floor.numel() == out.extra.numel() == 0
    edges = iou_bin_edges(ious, mask, 3, -1, "paper")
    chosen = as_mask(out.inds, ious.numel())
    assert iou_bin_counts(ious, chosen, 3, -1, "paper", edges=edges).tolist() == [30, 30, 30]


def test_authors_top_bin_empty_and_topped_up():
    ious, mask = proposals(BALANCED)
    sampler = IoUBalancedNegativeSampler(num_bins=3, binning="authors")
    out = sampler.sample_with_breakdown(ious, mask, 90, gen())
    check_valid(out.inds, mask, 90)
    assert [b.numel() for b in out.bins] == [30, 30, 0]
    assert out.iou_extra.numel() == 30
    assert bool(mask[out.iou_extra].all())
    # the bin draws really come from their bins
    assert bool((ious[out.bins[0]] < 1 / 3).all()) and bool((ious[out.bins[1]] >= 1 / 3).all())


def test_authors_384_example():
    # negatives below the 0.5 neg threshold; gt boxes added as proposals give IoU 1.0
    g = gen(1)
    neg = torch.rand(2000, generator=g) * 0.5
    ious = torch.cat([neg, torch.tensor([0.6, 0.8, 1.0])])
    mask = torch.cat([torch.ones(2000, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)])
    authors = IoUBalancedNegativeSampler(binning="authors").sample_with_breakdown(
        ious, mask, 384, gen()
    )
    assert [b.numel() for b in authors.bins] == [128, 128, 0]
    assert authors.iou_extra.numel() == 128
    paper = IoUBalancedNegativeSampler(binning="paper").sample_with_breakdown(
        ious, mask, 384, gen()
    )
    assert [b.numel() for b in paper.bins] == [128, 128, 128]
    assert paper.iou_extra.numel() == 0
    check_valid(authors.inds, mask, 384)
    check_valid(paper.inds, mask, 384)


def test_paper_sparse_bin_shortfall_from_pool():
    ious, mask = proposals([(0.05, 600), (0.2, 100), (0.45, 10)])
    out = IoUBalancedNegativeSampler().sample_with_breakdown(ious, mask, 90, gen())
    assert [b.numel() for b in out.bins] == [30, 30, 10]
    assert out.iou_extra.numel() == 20
    check_valid(out.inds, mask, 90)
    # every hard negative is taken
    assert bool(as_mask(out.inds, ious.numel())[ious == 0.45].all())


def test_iou_balanced_raises_mean_iou_over_random():
    ious, mask = proposals(BALANCED)
    iou_inds = IoUBalancedNegativeSampler().sample(ious, mask, 90, gen())
    rnd_inds = RandomSampler().sample(ious, mask, 90, gen())
    assert ious[iou_inds].mean() > ious[rnd_inds].mean() + 0.1


# -------------------------------------------------------------------------- take all, floor
@pytest.mark.parametrize(
    "sampler",
    [IoUBalancedNegativeSampler(), InstanceBalancedPositiveSampler(), RandomSampler()],
)
def test_take_all_when_few(sampler: Sampler):
    values = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    if isinstance(sampler, IoUBalancedNegativeSampler):
        values = values.float() / 10
    mask = torch.tensor([True, False, True, True, False, True, False, False])
    assert sampler.sample(values, mask, 4, gen()).tolist() == [0, 2, 3, 5]
    assert sampler.sample(values, mask, 10, gen()).tolist() == [0, 2, 3, 5]
    assert sampler.sample(values, mask, 0, gen()).tolist() == []
    empty = sampler.sample(values, torch.zeros(8, dtype=torch.bool), 3, gen())
    assert empty.dtype == torch.int64 and empty.numel() == 0


@pytest.mark.parametrize("binning", ["paper", "authors"])
def test_floor_fraction_share(binning: str):
    ious, mask = proposals([(0.05, 600), (0.25, 100), (0.45, 100)])
    sampler = IoUBalancedNegativeSampler(floor_thr=0.1, floor_fraction=0.5, binning=binning)
    out = sampler.sample_with_breakdown(ious, mask, 100, gen())
    check_valid(out.inds, mask, 100)
    assert out.floor.numel() == 50
    assert bool((ious[out.floor] < 0.1).all())
    assert int((ious[out.inds] < 0.1).sum()) == 50
    assert sum(b.numel() for b in out.bins) + out.iou_extra.numel() == 50
    # bins start at floor_thr
    assert float(iou_bin_edges(ious, mask, 3, 0.1, binning)[0]) == pytest.approx(0.1)


def test_small_floor_pool_topped_up_from_all():
    ious, mask = proposals([(0.05, 10), (0.25, 300)])
    sampler = IoUBalancedNegativeSampler(floor_thr=0.1, floor_fraction=0.5)
    out = sampler.sample_with_breakdown(ious, mask, 100, gen())
    check_valid(out.inds, mask, 100)
    assert out.floor.numel() == 10
    assert out.extra.numel() == 40
    assert bool((ious[out.extra] == 0.25).all())


def test_floor_thr_zero_vs_minus_one():
    ious, mask = proposals([(0.0, 500), (0.2, 300)])
    # floor_thr=0 (authors' sampler after its first call): IoU==0 is the floor pool, which gets
    # nothing when floor_fraction=0 and the IoU>0 pool is big enough
    zero = IoUBalancedNegativeSampler(floor_thr=0).sample(ious, mask, 100, gen())
    assert bool((ious[zero] > 0).all())
    # floor_thr=-1 (first call): everything is binned, bins from 0
    minus = IoUBalancedNegativeSampler(floor_thr=-1).sample_with_breakdown(ious, mask, 100, gen())
    assert [b.numel() for b in minus.bins] == [33, 0, 33]
    assert int((ious[minus.inds] == 0).sum()) >= 33
    # small IoU>0 pool: all of it, then the floor pool fills the rest
    ious2, mask2 = proposals([(0.0, 500), (0.2, 50)])
    out = IoUBalancedNegativeSampler(floor_thr=0).sample_with_breakdown(ious2, mask2, 100, gen())
    assert out.floor.numel() == 50 and int((ious2[out.inds] == 0.2).sum()) == 50


def test_num_bins_one_is_uniform_over_pool():
    ious, mask = proposals(BALANCED)
    out = IoUBalancedNegativeSampler(num_bins=1).sample_with_breakdown(ious, mask, 90, gen())
    assert [b.numel() for b in out.bins] == [90]
    check_valid(out.inds, mask, 90)


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("binning", ["paper", "authors"])
def test_seeded_determinism(binning: str):
    ious, mask = proposals(BALANCED)
    sampler = IoUBalancedNegativeSampler(binning=binning)
    a = sampler.sample(ious, mask, 90, gen(3))
    b = sampler.sample(ious, mask, 90, gen(3))
    c = sampler.sample(ious, mask, 90, gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    gts = torch.arange(300) % 3
    pmask = torch.ones(300, dtype=torch.bool)
    pos = InstanceBalancedPositiveSampler()
    assert torch.equal(pos.sample(gts, pmask, 30, gen(3)), pos.sample(gts, pmask, 30, gen(3)))
    assert not torch.equal(pos.sample(gts, pmask, 30, gen(3)), pos.sample(gts, pmask, 30, gen(4)))
    rnd = RandomSampler()
    assert torch.equal(rnd.sample(ious, mask, 90, gen(3)), rnd.sample(ious, mask, 90, gen(3)))
    assert not torch.equal(rnd.sample(ious, mask, 90, gen(3)), rnd.sample(ious, mask, 90, gen(4)))


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_valid(seed: int):
    g = gen(seed)
    n = 500
    ious = torch.rand(n, generator=g)
    mask = torch.rand(n, generator=g) < 0.6
    gts = torch.randint(0, 7, (n,), generator=g)
    for k in (0, 1, 17, 128, 400):
        for binning in ("paper", "authors"):
            for floor_thr, frac in ((-1, 0.0), (0, 0.25), (0.1, 0.5)):
                s = IoUBalancedNegativeSampler(3, floor_thr, frac, binning)
                check_valid(s.sample(ious, mask, k, g), mask, k)
        check_valid(InstanceBalancedPositiveSampler().sample(gts, mask, k, g), mask, k)
        check_valid(RandomSampler().sample(ious, mask, k, g), mask, k)


# ------------------------------------------------------------------------------ positives
def test_positive_exact_cap():
    # 4 gts, 36 expected: cap = round(36 / 4) + 1 = 10, and 10 + 10 + 10 + 6 == 36
    gts = torch.cat([torch.full((100,), 0), torch.full((100,), 1), torch.full((100,), 2),
                     torch.full((6,), 3)])
    mask = torch.ones_like(gts, dtype=torch.bool)
    inds = InstanceBalancedPositiveSampler().sample(gts, mask, 36, gen())
    check_valid(inds, mask, 36)
    assert torch.bincount(gts[inds], minlength=4).tolist() == [10, 10, 10, 6]


def test_positive_short_topped_up():
    gts = torch.cat([torch.full((100,), 0), torch.full((5,), 1), torch.full((3,), 2)])
    mask = torch.ones_like(gts, dtype=torch.bool)
    inds = InstanceBalancedPositiveSampler().sample(gts, mask, 30, gen())
    check_valid(inds, mask, 30)
    # cap 11 each: 11 + 5 + 3 = 19, then 11 more from gt 0's remaining positives
    assert torch.bincount(gts[inds], minlength=3).tolist() == [22, 5, 3]


def test_positive_over_subsampled_within_cap():
    gts = torch.arange(150) % 3  # 3 gts, 50 each; cap = round(10) + 1 = 11 -> 33 > 30
    mask = torch.ones(150, dtype=torch.bool)
    mask[::7] = False
    for seed in range(10):
        inds = InstanceBalancedPositiveSampler().sample(gts, mask, 30, gen(seed))
        check_valid(inds, mask, 30)
        counts = torch.bincount(gts[inds], minlength=3)
        assert int(counts.max()) <= 11 and int(counts.min()) >= 8


def test_positive_balances_vs_random():
    gts = torch.cat([torch.zeros(500, dtype=torch.long), torch.arange(1, 11).repeat(4)])
    mask = torch.ones_like(gts, dtype=torch.bool)
    inds = InstanceBalancedPositiveSampler().sample(gts, mask, 64, gen())
    # cap round(64 / 11) + 1 = 7: gt 0 gets 7 + top-up, each small gt keeps all 4
    assert torch.bincount(gts[inds], minlength=11)[1:].tolist() == [4] * 10


# ---------------------------------------------------------------------------------- random
def test_random_sampler_uniform():
    g = gen(0)
    ious = torch.rand(1000, generator=g) ** 3
    mask = torch.rand(1000, generator=g) < 0.5
    sampler = RandomSampler()
    means = torch.stack([ious[sampler.sample(ious, mask, 50, g)].mean() for _ in range(400)])
    assert float(means.mean()) == pytest.approx(float(ious[mask].mean()), abs=0.01)
    hits = torch.zeros(1000)
    for _ in range(400):
        hits[sampler.sample(ious, mask, 50, g)] += 1
    assert float(hits[~mask].sum()) == 0
    expected = 400 * 50 / int(mask.sum())
    assert float(hits[mask].mean()) == pytest.approx(expected)
    assert float(hits[mask].std()) < 0.5 * expected


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_bins": 0}, "num_bins"),
        ({"num_bins": 2.5}, "num_bins"),
        ({"floor_fraction": 1.0}, "floor_fraction"),
        ({"floor_fraction": -0.1}, "floor_fraction"),
        ({"binning": "nope"}, "binning"),
    ],
)
def test_bad_constructor_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IoUBalancedNegativeSampler(**kwargs)


@pytest.mark.parametrize(
    "sampler",
    [IoUBalancedNegativeSampler(), InstanceBalancedPositiveSampler(), RandomSampler()],
)
def test_bad_sample_args(sampler: Sampler):
    vals = torch.zeros(5, dtype=torch.long)
    if isinstance(sampler, IoUBalancedNegativeSampler):
        vals = vals.float()
    mask = torch.ones(5, dtype=torch.bool)
    with pytest.raises(ValueError, match="does not match"):
        sampler.sample(vals, torch.ones(4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="num_expected"):
        sampler.sample(vals, mask, -1)
    with pytest.raises(ValueError, match="bool"):
        sampler.sample(vals, mask.long(), 2)
    with pytest.raises(ValueError, match="1-D"):
        sampler.sample(vals.reshape(1, 5), mask.reshape(1, 5), 2)


def test_bad_dtypes_and_helper_args():
    mask = torch.ones(5, dtype=torch.bool)
    with pytest.raises(ValueError, match="float"):
        IoUBalancedNegativeSampler().sample(torch.zeros(5, dtype=torch.long), mask, 2)
    with pytest.raises(ValueError, match="integer"):
        InstanceBalancedPositiveSampler().sample(torch.zeros(5), mask, 2)
    with pytest.raises(ValueError, match="binning"):
        iou_bin_edges(torch.zeros(5), mask, 3, -1, "other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_bins"):
        iou_bin_counts(torch.zeros(5), mask, 0)


@pytest.mark.parametrize(("floor_thr", "binning", "num_expected"), [
    (-1, "paper", 90), (-1, "authors", 90), (0, "authors", 90),  # bins drawn
    (0, "authors", 300),  # IoU pool (IoU > 0) smaller than its share: taken whole
    (-1, "paper", 5000),  # fewer candidates than asked for: all taken
])
def test_the_breakdown_accounts_for_every_chosen_index_once(floor_thr, binning, num_expected):
    ious, mask = proposals([(0.0, 500), (0.05, 100), (0.2, 60), (0.45, 10)])
    out = IoUBalancedNegativeSampler(3, floor_thr=floor_thr, binning=binning) \
        .sample_with_breakdown(ious, mask, num_expected, gen())
    parts = [*out.bins, out.iou_extra, out.floor, out.extra, out.iou_whole]
    joined = torch.cat(parts)
    assert joined.numel() == torch.unique(joined).numel()  # disjoint
    assert torch.equal(joined.sort().values, out.inds)  # and together the draw
    if num_expected == 300:  # the 170 negatives with IoU > 0, then the floor pool
        assert out.iou_whole.numel() == 170 and out.floor.numel() == 130
