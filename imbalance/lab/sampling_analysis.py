"""Measurements behind the sampling chapter: how hard a two-stage detector finds its proposals,
and how often a sampler picks each one.

* :func:`scored_proposals`: a Faster R-CNN-style detector's proposals for a few images, labelled
  as the second stage labels them in training, with each proposal's second-stage classification
  loss (the hardness online hard example mining ranks by) and background probability;
* :func:`hardest`: the ``n`` highest-loss candidates, OHEM's choice;
* :func:`inclusion_frequency`: how often a :class:`~imbalance.sampling.Sampler` picks each
  candidate over repeated seeded draws;
* :func:`expected_bin_inclusion`: the same, in closed form, for the IoU-balanced sampler
  without a floor pool (per-bin quota, then the uniform top-up);
* :func:`bin_inclusion`: one image's IoU bins with both formulas and the measured frequency;
* :func:`mean_per_interval`: the measured frequency averaged over finer IoU intervals;
* :func:`hard_recall`: how much of OHEM's choice another sampler's choice contains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imbalance.data import CocoDetection
from imbalance.lab.snapshot import rpn_forward
from imbalance.models.libra_rcnn import proposal_ious
from imbalance.sampling import (
    IoUBalancedNegativeSampler,
    Sampler,
    iou_bin_edges,
    iou_bin_masks,
)

__all__ = [
    "BinInclusion",
    "ScoredProposals",
    "bin_inclusion",
    "expected_bin_inclusion",
    "hard_recall",
    "hardest",
    "inclusion_frequency",
    "mean_per_interval",
    "scored_proposals",
]


class ScoredProposals(NamedTuple):
    """One image's proposals as the second stage sees them in training; ``R`` proposals.

    Attributes:
        boxes (Tensor[R, 4], float): RPN proposals (then the gt boxes if added), resized frame.
        is_gt (Tensor[R], bool): True for the added ground-truth boxes.
        max_overlaps (Tensor[R], float): best IoU with any gt box (:func:`proposal_ious`).
        labels (Tensor[R], int64): 1..K positive, 0 negative, -1 ignored (the matcher's rule).
        loss (Tensor[R], float): second-stage softmax cross-entropy against ``labels``
            (background for negatives); NaN for ignored proposals.
        background_prob (Tensor[R], float): the classifier's softmax probability of background.
        matched (Tensor[R], int64): the index of the gt box of ``max_overlaps`` (-1 for an image
            without objects): the object a positive belongs to, which instance-balanced sampling
            balances on.
    """

    boxes: Tensor
    is_gt: Tensor
    max_overlaps: Tensor
    labels: Tensor
    loss: Tensor
    background_prob: Tensor
    matched: Tensor


@torch.no_grad()
def scored_proposals(model: nn.Module, dataset: CocoDetection, num_images: int = 8,
                     add_gt: bool = True) -> list[ScoredProposals]:
    """Score the proposals of the first ``num_images`` of ``dataset`` with ``model``'s 2nd stage.

    ``model`` is a torchvision ``FasterRCNN`` whose ``roi_heads`` has ``proposal_matcher``,
    ``box_roi_pool``, ``box_head`` and ``box_predictor`` (e.g. :func:`imbalance.models.libra_rcnn`).
    The proposals are the RPN's in evaluation mode (``rpn_post_nms_top_n_test`` per image, as
    :func:`imbalance.lab.snapshot.rpn_proposals`); ``add_gt`` appends the gt boxes as training does.
    Labels follow the matcher's thresholds, as ``LibraRoIHeads.sample_proposals``. The model is
    left in the mode it was in. No randomness is used.
    """
    heads = model.roi_heads
    low, high = heads.proposal_matcher.low_threshold, heads.proposal_matcher.high_threshold
    was_training = model.training
    model.eval()
    out = []
    for images_t, target, features, boxes in rpn_forward(model, dataset, num_images):
        gt, gt_labels = target["boxes"].to(boxes.dtype), target["labels"]
        is_gt = torch.zeros(len(boxes), dtype=torch.bool)
        if add_gt:
            boxes = torch.cat([boxes, gt])
            is_gt = torch.cat([is_gt, torch.ones(len(gt), dtype=torch.bool)])
        max_overlaps, matched = proposal_ious(boxes, gt)
        labels = gt_labels[matched.clamp(min=0)] if len(gt) else torch.zeros_like(matched)
        labels = labels.masked_fill(max_overlaps < low, 0)
        labels = labels.masked_fill((max_overlaps >= low) & (max_overlaps < high), -1)
        pooled = heads.box_roi_pool(features, [boxes], images_t.image_sizes)
        logits = heads.box_predictor(heads.box_head(pooled))[0]
        loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        loss = loss.masked_fill(labels < 0, float("nan"))
        out.append(ScoredProposals(boxes, is_gt, max_overlaps, labels, loss,
                                   logits.softmax(-1)[:, 0], matched))
    model.train(was_training)
    return out


def hardest(loss: Tensor, candidate_mask: Tensor, n: int) -> Tensor:
    """The ``min(n, candidate_mask.sum())`` candidates of highest ``loss`` (OHEM's choice).

    Args:
        loss (Tensor[N], float): per-proposal loss; non-candidates may hold anything (NaN too).
        candidate_mask (Tensor[N], bool): the proposals that may be chosen.
        n (int): how many to choose.

    Returns:
        Tensor[n'], int64: ascending indices; ties go to the lower index.
    """
    inds = candidate_mask.nonzero().squeeze(1)
    order = torch.sort(loss[inds], descending=True, stable=True).indices
    return inds[order[: max(n, 0)]].sort().values


def inclusion_frequency(sampler: Sampler, values: Tensor, candidate_mask: Tensor,
                        num_expected: int, draws: int, seed: int = 0) -> Tensor:
    """Fraction of ``draws`` seeded draws in which ``sampler`` chose each proposal.

    Args:
        sampler: any :class:`~imbalance.sampling.Sampler`.
        values (Tensor[N]), candidate_mask (Tensor[N], bool), num_expected (int): as
            ``sampler.sample``.
        draws (int): number of draws (>= 1), all from one ``torch.Generator`` seeded ``seed``.

    Returns:
        Tensor[N], float64 in [0, 1]: 0 for non-candidates.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    gen = torch.Generator().manual_seed(seed)
    hits = torch.zeros(values.shape[0], dtype=torch.float64)
    for _ in range(draws):
        hits[sampler.sample(values, candidate_mask, num_expected, generator=gen)] += 1
    return hits / draws


def expected_bin_inclusion(counts: Tensor, num_expected: int) -> Tensor:
    """Probability that a candidate of each IoU bin is chosen, no floor pool, in closed form.

    With ``M_k = counts[k]`` candidates in bin ``k``, ``K`` bins, ``N = num_expected`` and the
    quota ``q = int(N / K)``, the sampler takes ``t_k = min(M_k, q)`` from bin ``k`` and then
    ``S = N - sum t_k`` uniformly from the ``R = sum (M_k - t_k)`` left over, so

        p_k = t_k / M_k + (1 - t_k / M_k) * S / R.

    This is :class:`~imbalance.sampling.IoUBalancedNegativeSampler` with ``floor_thr < 0`` and
    ``floor_fraction = 0``, where every candidate is in a bin. When ``sum M_k <= N`` all are
    taken: ``p_k = 1``.

    Args:
        counts (Tensor[K], int): candidates per bin (:func:`imbalance.sampling.iou_bin_counts`).
        num_expected (int): N.

    Returns:
        Tensor[K], float64: ``p_k``; NaN for an empty bin.
    """
    m = counts.to(torch.float64)
    if float(m.sum()) <= num_expected:
        return torch.where(m > 0, 1.0, float("nan")).to(torch.float64)
    taken = m.clamp(max=int(num_expected / len(m)))
    left = m - taken
    top_up = (num_expected - taken.sum()) / left.sum() if float(left.sum()) > 0 else 0.0
    p = taken / m + left / m * top_up
    return torch.where(m > 0, p, float("nan"))


class BinInclusion(NamedTuple):
    """One image's IoU bins under the IoU-balanced sampler: what each formula says and what the
    sampler does.

    Attributes:
        edges (Tensor[K + 1], float): the bin edges (:func:`imbalance.sampling.iou_bin_edges`).
        counts (Tensor[K], int64): ``M_k``, the candidates in each bin.
        paper (Tensor[K], float64): the paper's ``p_k = N / (K M_k)``.
        closed_form (Tensor[K], float64): :func:`expected_bin_inclusion` (quota, then top-up).
        measured (Tensor[K], float64): the mean of ``frequency`` over each bin's candidates (NaN
            for an empty bin).
        frequency (Tensor[N], float64): :func:`inclusion_frequency` of every proposal.
    """

    edges: Tensor
    counts: Tensor
    paper: Tensor
    closed_form: Tensor
    measured: Tensor
    frequency: Tensor


def bin_inclusion(max_overlaps: Tensor, candidate_mask: Tensor, num_expected: int,
                  num_bins: int = 3, binning: str = "paper", draws: int = 100,
                  seed: int = 0) -> BinInclusion:
    """The IoU-balanced sampler's inclusion probability per bin, by formula and measured.

    Args:
        max_overlaps (Tensor[N], float), candidate_mask (Tensor[N], bool), num_expected (int):
            as :meth:`IoUBalancedNegativeSampler.sample`.
        num_bins (int): K.
        binning (str): ``"paper"`` or ``"authors"`` (see :class:`IoUBalancedNegativeSampler`).
        draws, seed: as :func:`inclusion_frequency`.
    """
    sampler = IoUBalancedNegativeSampler(num_bins, binning=binning)
    frequency = inclusion_frequency(sampler, max_overlaps, candidate_mask, num_expected, draws,
                                    seed)
    masks = iou_bin_masks(max_overlaps, candidate_mask, num_bins, binning=binning)
    counts = masks.sum(1)
    measured = torch.tensor([float(frequency[b].mean()) if b.any() else float("nan")
                             for b in masks], dtype=torch.float64)
    return BinInclusion(iou_bin_edges(max_overlaps, candidate_mask, num_bins, binning=binning),
                        counts, num_expected / (num_bins * counts.double()),
                        expected_bin_inclusion(counts, num_expected), measured, frequency)


def mean_per_interval(max_overlaps: Tensor, frequency: Tensor, candidate_mask: Tensor,
                      edges: Tensor, splits: int = 5) -> tuple[Tensor, Tensor]:
    """The mean of ``frequency`` over the candidates of each of ``splits`` equal IoU intervals
    inside every bin of ``edges``.

    Returns:
        ``(fine_edges, means)``: Tensor[K * splits + 1] and Tensor[K * splits] (float64; NaN
        where an interval holds no candidate), ready for :func:`imbalance.plotting.plot_histogram`.
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    fine = torch.cat([torch.linspace(float(a), float(b), splits + 1)[:-1]
                      for a, b in zip(edges[:-1], edges[1:], strict=True)] + [edges[-1:].float()])
    idx = torch.bucketize(max_overlaps[candidate_mask].float(), fine[1:-1], right=True)
    means = torch.full((len(fine) - 1,), float("nan"), dtype=torch.float64)
    return fine, means.scatter_reduce(0, idx, frequency[candidate_mask].double(), "mean",
                                      include_self=False)


def hard_recall(chosen: Sequence[Tensor], hard: Sequence[Tensor]) -> float:
    """The share of each image's hardest negatives (:func:`hardest`) that ``chosen`` also took,
    averaged over images.

    Args:
        chosen, hard: per image, the indices a sampler chose and the indices OHEM chose.
    """
    if len(chosen) != len(hard) or not hard:
        raise ValueError(f"need one index tensor per image in both, got {len(chosen)} and "
                         f"{len(hard)}")
    return float(np.mean([np.isin(c.numpy(), h.numpy()).sum() / max(len(h), 1)
                          for c, h in zip(chosen, hard, strict=True)]))


def positives_per_object(sampler: Sampler, matched: Tensor, positive_mask: Tensor,
                         num_expected: int, draws: int, seed: int = 0) -> Tensor:
    """How many positives ``sampler`` gives each object, on average over ``draws`` seeded draws.

    Args:
        sampler: a positive sampler, e.g. :class:`~imbalance.sampling.RandomSampler` or
            :class:`~imbalance.sampling.InstanceBalancedPositiveSampler` (which balances on
            ``matched``).
        matched (Tensor[N], int64): each proposal's object (:class:`ScoredProposals`'s
            ``matched``).
        positive_mask (Tensor[N], bool): the positive proposals.
        num_expected (int): the positives the RoI batch takes at most.
        draws (int): number of draws (>= 1), all from one ``torch.Generator`` seeded ``seed``.

    Returns:
        Tensor[G], float64: the mean number of sampled positives of each object ``0..G-1``
        (``G = matched.max() + 1``); they sum to ``min(num_expected, positive_mask.sum())``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    num_objects = int(matched.max()) + 1 if matched.numel() else 0
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(num_objects, dtype=torch.float64)
    for _ in range(draws):
        chosen = sampler.sample(matched, positive_mask, num_expected, generator=gen)
        total += torch.bincount(matched[chosen], minlength=num_objects).double()
    return total / draws
