"""Proposal samplers for two-stage detectors: IoU-balanced negatives, instance-balanced positives.

Libra R-CNN (Pang et al., CVPR 2019) replaces the uniform choice of RoIs with

* :class:`IoUBalancedNegativeSampler`: negatives spread evenly over equal-width IoU bins, so the
  rarer *hard* negatives (IoU just under the negative threshold) are not drowned by the mass of
  easy ones near IoU 0;
* :class:`InstanceBalancedPositiveSampler`: positives capped per ground-truth box, so large
  objects with many matching proposals do not crowd out small ones;
* :class:`RandomSampler`: the uniform baseline.

All share one contract (:class:`Sampler`)::

    sample(values, candidate_mask, num_expected, generator=None) -> LongTensor

``values`` is a per-proposal tensor of shape ``(N,)`` (IoU for the negative sampler, matched gt
index for the positive sampler, ignored by the random one), ``candidate_mask`` a ``bool`` tensor
of shape ``(N,)`` marking the proposals that may be chosen. The result is a 1-D ``int64`` tensor
of unique indices into ``values``, in ascending order, all with ``candidate_mask`` True, of length
``min(num_expected, candidate_mask.sum())``. All randomness goes through ``generator``
(a :class:`torch.Generator`, or the global RNG when ``None``), so a seeded generator reproduces a
draw exactly.

The behaviour follows the authors' released code (``mmdet``'s ``IoUBalancedNegSampler`` and
``InstanceBalancedPosSampler``); :func:`iou_bin_edges` and :func:`iou_bin_counts` expose the IoU
bins for inspection, e.g. to show that with the authors' binning the top bin is always empty.
"""

from __future__ import annotations

import abc
from typing import Literal, NamedTuple

import torch
from torch import Tensor

Binning = Literal["paper", "authors"]
BINNINGS: tuple[str, ...] = ("paper", "authors")

__all__ = [
    "BINNINGS",
    "IoUBalancedNegativeSampler",
    "IoUBalancedSample",
    "InstanceBalancedPositiveSampler",
    "RandomSampler",
    "Sampler",
    "iou_bin_counts",
    "iou_bin_edges",
    "iou_bin_masks",
]


# --------------------------------------------------------------------------------------- helpers
def _check_inputs(values: Tensor, candidate_mask: Tensor, num_expected: int) -> None:
    if not isinstance(values, Tensor) or not isinstance(candidate_mask, Tensor):
        raise ValueError("values and candidate_mask must be torch tensors")
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D of shape (N,), got shape {tuple(values.shape)}")
    if candidate_mask.dtype != torch.bool:
        raise ValueError(f"candidate_mask must be a bool tensor, got {candidate_mask.dtype}")
    if candidate_mask.shape != values.shape:
        raise ValueError(
            f"candidate_mask shape {tuple(candidate_mask.shape)} does not match "
            f"values shape {tuple(values.shape)}"
        )
    if isinstance(num_expected, bool) or not isinstance(num_expected, int):
        raise ValueError(f"num_expected must be an int, got {type(num_expected).__name__}")
    if num_expected < 0:
        raise ValueError(f"num_expected must be >= 0, got {num_expected}")


def _check_binning(num_bins: int, binning: str) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")


def _choose(mask: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Bool mask of ``min(k, mask.sum())`` entries of ``mask``, uniform without replacement."""
    inds = mask.nonzero().squeeze(1)
    out = torch.zeros_like(mask)
    if k <= 0 or inds.numel() == 0:
        return out
    if inds.numel() > k:
        perm = torch.randperm(inds.numel(), generator=generator, device="cpu").to(inds.device)
        inds = inds[perm[:k]]
    out[inds] = True
    return out


def _as_inds(mask: Tensor) -> Tensor:
    return mask.nonzero().squeeze(1).to(torch.int64)


def _iou_pool_masks(
    max_overlaps: Tensor, candidate_mask: Tensor, floor_thr: float
) -> tuple[Tensor, Tensor, float]:
    """Split candidates into the IoU-binned pool and the floor pool, as the authors do.

    Returns ``(iou_pool, floor_pool, lo)``; ``lo`` is where the IoU bins start.
    """
    if floor_thr > 0:
        floor_pool = candidate_mask & (max_overlaps >= 0) & (max_overlaps < floor_thr)
        iou_pool = candidate_mask & (max_overlaps >= floor_thr)
        lo = float(floor_thr)
    elif floor_thr == 0:
        floor_pool = candidate_mask & (max_overlaps == 0)
        iou_pool = candidate_mask & (max_overlaps > 0)
        lo = 0.0
    else:  # floor_thr < 0: no floor pool, every candidate is binned, bins start at 0
        floor_pool = torch.zeros_like(candidate_mask)
        iou_pool = candidate_mask & (max_overlaps > floor_thr)
        lo = 0.0
    return iou_pool, floor_pool, lo


# ------------------------------------------------------------------------------------- IoU bins
def iou_bin_edges(
    max_overlaps: Tensor,
    candidate_mask: Tensor,
    num_bins: int = 3,
    floor_thr: float = -1,
    binning: Binning = "paper",
) -> Tensor:
    """The ``num_bins + 1`` IoU bin edges the negative sampler uses.

    Args:
        max_overlaps (Tensor[N], float): max IoU of each proposal with any ground-truth box.
        candidate_mask (Tensor[N], bool): the negatives.
        num_bins (int): number of equal-width bins.
        floor_thr (float): IoU below which negatives go to the floor pool (< 0: no floor pool).
        binning (str): ``"paper"``: bins span ``[lo, hi]`` with ``hi`` the max IoU over the
            negatives (last bin closed); ``"authors"``: ``hi`` is the max IoU over *all* proposals
            and every bin is half-open ``[a, b)``. ``lo = max(floor_thr, 0)`` in both.

    Returns:
        Tensor[num_bins + 1], float: edges ``lo, lo + w, ..., hi``, ``w = (hi - lo) / num_bins``.
    """
    _check_inputs(max_overlaps, candidate_mask, 0)
    _check_binning(num_bins, binning)
    iou_pool, _, lo = _iou_pool_masks(max_overlaps, candidate_mask, floor_thr)
    if binning == "authors":
        hi = float(max_overlaps.max()) if max_overlaps.numel() else lo
    else:
        hi = float(max_overlaps[iou_pool].max()) if bool(iou_pool.any()) else lo
    steps = torch.arange(num_bins + 1, dtype=torch.float64)
    edges = lo + steps * ((hi - lo) / num_bins)
    edges[-1] = hi  # exact, so the max IoU sits on the last edge
    return edges.to(max_overlaps.dtype if max_overlaps.is_floating_point() else torch.float32)


def iou_bin_masks(
    max_overlaps: Tensor,
    candidate_mask: Tensor,
    num_bins: int = 3,
    floor_thr: float = -1,
    binning: Binning = "paper",
    edges: Tensor | None = None,
) -> Tensor:
    """Bool masks ``(num_bins, N)``: which IoU-pool candidates fall in each bin.

    Arguments as in :func:`iou_bin_edges`; pass ``edges`` to reuse precomputed ones (e.g. to bin the
    *chosen* proposals with the edges computed from all negatives). Bins are ``[a, b)``; with
    ``binning="paper"`` the last bin is closed so the hardest negative is binned. Candidates outside
    the IoU pool (the floor pool) are in no bin.
    """
    _check_binning(num_bins, binning)
    if edges is None:
        edges = iou_bin_edges(max_overlaps, candidate_mask, num_bins, floor_thr, binning)
    iou_pool, _, _ = _iou_pool_masks(max_overlaps, candidate_mask, floor_thr)
    ious = max_overlaps.unsqueeze(0)
    lower, upper = edges[:-1].unsqueeze(1), edges[1:].unsqueeze(1)
    in_bin = (ious >= lower) & (ious < upper)
    if binning == "paper":
        in_bin[-1] |= max_overlaps == edges[-1]
    return in_bin & iou_pool.unsqueeze(0)


def iou_bin_counts(
    max_overlaps: Tensor,
    candidate_mask: Tensor,
    num_bins: int = 3,
    floor_thr: float = -1,
    binning: Binning = "paper",
    edges: Tensor | None = None,
) -> Tensor:
    """IoU-pool candidates per bin, ``Tensor[num_bins]`` int64 (see :func:`iou_bin_masks`)."""
    return iou_bin_masks(max_overlaps, candidate_mask, num_bins, floor_thr, binning, edges).sum(1)


# -------------------------------------------------------------------------------------- samplers
class Sampler(abc.ABC):
    """Common contract of the proposal samplers.

    ``sample(values, candidate_mask, num_expected, generator=None)``:

    Args:
        values (Tensor[N]): per-proposal values the sampler balances on (meaning per sampler).
        candidate_mask (Tensor[N], bool): proposals that may be chosen.
        num_expected (int): how many to choose (>= 0).
        generator (torch.Generator, optional): source of all randomness.

    Returns:
        Tensor[K], int64: unique ascending indices into ``values`` with ``candidate_mask`` True,
        ``K = min(num_expected, candidate_mask.sum())``. When there are at most ``num_expected``
        candidates, all of them are returned.
    """

    @abc.abstractmethod
    def sample(
        self,
        values: Tensor,
        candidate_mask: Tensor,
        num_expected: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Choose up to ``num_expected`` candidates; see :class:`Sampler`."""


class RandomSampler(Sampler):
    """Uniform sampling without replacement; ``values`` is only checked for shape."""

    def sample(
        self,
        values: Tensor,
        candidate_mask: Tensor,
        num_expected: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        _check_inputs(values, candidate_mask, num_expected)
        return _as_inds(_choose(candidate_mask, num_expected, generator))


class IoUBalancedSample(NamedTuple):
    """Breakdown of one IoU-balanced draw, each field a ``Tensor[K_i]`` int64 of indices.

    ``bins[k]`` were drawn from bin ``k`` (at most the per-bin quota), ``iou_extra`` is the uniform
    shortfall top-up from the rest of the IoU pool, ``floor`` the floor-pool draw and ``extra`` the
    final uniform top-up from all remaining candidates (every candidate, when there are no more
    than asked for); ``iou_whole`` is the whole IoU pool, taken without bins when it holds no more
    than its share ``n_iou``. ``inds`` is their (disjoint) union, sorted.
    """

    inds: Tensor
    bins: tuple[Tensor, ...]
    iou_extra: Tensor
    floor: Tensor
    extra: Tensor
    iou_whole: Tensor


class IoUBalancedNegativeSampler(Sampler):
    """IoU-balanced negative sampling (Libra R-CNN).

    ``values`` is ``max_overlaps`` (Tensor[N], float): the max IoU of each proposal with any gt;
    ``candidate_mask`` marks the negatives. With ``M`` negatives and ``M <= num_expected`` all are
    taken. Otherwise, as the authors' code does:

    1. Split negatives into the *floor pool* (IoU < ``floor_thr``; IoU == 0 when ``floor_thr`` is 0;
       empty when ``floor_thr < 0``) and the *IoU pool* (the rest).
    2. ``n_iou = int(num_expected * (1 - floor_fraction))``. If the IoU pool has more than ``n_iou``
       members, split it into ``num_bins`` equal-width IoU bins (:func:`iou_bin_edges`), draw
       ``min(count, int(n_iou / num_bins))`` uniformly from each, then top up uniformly from the
       rest of the IoU pool to ``n_iou``. Otherwise take the whole IoU pool.
    3. Draw ``num_expected - #IoU-sampled`` uniformly from the floor pool.
    4. If still short, top up uniformly from all remaining negatives.

    Args:
        num_bins (int): number of IoU bins (>= 1).
        floor_thr (float): floor-pool threshold; ``< 0`` (default -1) means no floor pool.
        floor_fraction (float): share of ``num_expected`` meant for the floor pool, in [0, 1).
        binning (str): ``"paper"`` (default) or ``"authors"``; see below.

    Binning: ``"paper"`` spans the negatives' own IoU range ``[lo, hi]``, ``lo = max(floor_thr, 0)``
    and ``hi`` the max IoU over the IoU-pool negatives, so every bin can be populated.
    ``"authors"`` reproduces the released code: ``hi = max_overlaps.max()`` over *all* proposals,
    which is 1.0 once the gt boxes are added as proposals, and bins are half-open ``[a, b)``. With a
    negative IoU threshold of 0.5 and 3 bins, the top bin ``[2/3, 1)`` is then always empty: for
    384 expected, the bins give ``[128, 128, 0]`` and the remaining 128 come from the uniform
    top-up over the IoU pool.

    ``floor_thr=-1`` quirk: the authors' sampler, on its first call with ``floor_thr=-1``, pools
    every negative into the bins (no floor pool, bins from 0) and then *mutates* its own
    ``floor_thr`` to 0; from the second call on, IoU == 0 negatives form a floor pool (filled
    with the ``floor_fraction`` share, i.e. nothing beyond the top-up when it is 0) and the bins
    hold only IoU > 0. This class is stateless: ``floor_thr < 0`` always means the first-call
    behaviour; pass ``floor_thr=0`` to get the authors' behaviour from the second call on.
    """

    def __init__(
        self,
        num_bins: int = 3,
        floor_thr: float = -1,
        floor_fraction: float = 0.0,
        binning: Binning = "paper",
    ) -> None:
        _check_binning(num_bins, binning)
        if not 0.0 <= float(floor_fraction) < 1.0:
            raise ValueError(f"floor_fraction must be in [0, 1), got {floor_fraction}")
        self.num_bins = num_bins
        self.floor_thr = float(floor_thr)
        self.floor_fraction = float(floor_fraction)
        self.binning: Binning = binning

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_bins={self.num_bins}, floor_thr={self.floor_thr}, "
            f"floor_fraction={self.floor_fraction}, binning={self.binning!r})"
        )

    def sample(
        self,
        max_overlaps: Tensor,
        candidate_mask: Tensor,
        num_expected: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Indices of the chosen negatives, ``Tensor[K]`` int64 (see :class:`Sampler`)."""
        return self.sample_with_breakdown(
            max_overlaps, candidate_mask, num_expected, generator
        ).inds

    def sample_with_breakdown(
        self,
        max_overlaps: Tensor,
        candidate_mask: Tensor,
        num_expected: int,
        generator: torch.Generator | None = None,
    ) -> IoUBalancedSample:
        """As :meth:`sample`, plus which stage chose each index (:class:`IoUBalancedSample`)."""
        _check_inputs(max_overlaps, candidate_mask, num_expected)
        if not max_overlaps.is_floating_point():
            raise ValueError(f"max_overlaps must be a float tensor, got {max_overlaps.dtype}")
        empty = max_overlaps.new_zeros(0, dtype=torch.int64)
        no_bins = tuple(empty for _ in range(self.num_bins))
        if int(candidate_mask.sum()) <= num_expected:
            inds = _as_inds(candidate_mask)
            return IoUBalancedSample(inds, no_bins, empty, empty, inds, empty)

        iou_pool, floor_pool, _ = _iou_pool_masks(max_overlaps, candidate_mask, self.floor_thr)
        n_iou = int(num_expected * (1 - self.floor_fraction))
        bin_choices: list[Tensor] = []
        iou_extra = torch.zeros_like(candidate_mask)
        iou_whole = torch.zeros_like(candidate_mask)
        if int(iou_pool.sum()) > n_iou:
            masks = iou_bin_masks(
                max_overlaps, candidate_mask, self.num_bins, self.floor_thr, self.binning
            )
            quota = int(n_iou / self.num_bins)
            for k in range(self.num_bins):
                bin_choices.append(_choose(masks[k], quota, generator))
            iou_chosen = torch.stack(bin_choices).any(0)
            shortfall = n_iou - int(iou_chosen.sum())
            iou_extra = _choose(iou_pool & ~iou_chosen, shortfall, generator)
            iou_chosen |= iou_extra
        else:
            iou_whole = iou_pool.clone()
            iou_chosen = iou_pool.clone()

        floor_chosen = _choose(floor_pool, num_expected - int(iou_chosen.sum()), generator)
        chosen = iou_chosen | floor_chosen
        extra = _choose(candidate_mask & ~chosen, num_expected - int(chosen.sum()), generator)
        chosen |= extra
        bins = tuple(_as_inds(m) for m in bin_choices) if bin_choices else no_bins
        return IoUBalancedSample(
            _as_inds(chosen), bins, _as_inds(iou_extra), _as_inds(floor_chosen), _as_inds(extra),
            _as_inds(iou_whole),
        )


class InstanceBalancedPositiveSampler(Sampler):
    """Instance-balanced positive sampling (Libra R-CNN).

    ``values`` is ``assigned_gt_inds`` (Tensor[N], int): the matched gt index of each proposal;
    ``candidate_mask`` marks the positives. With at most ``num_expected`` positives all are taken.
    Otherwise, with ``G`` distinct gts among the positives, each gt keeps at most
    ``int(round(num_expected / G) + 1)`` of its positives (uniformly at random); a shortfall is
    topped up uniformly from the remaining positives, an excess subsampled uniformly down to
    ``num_expected``. Vectorised: no Python loop over gts.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def sample(
        self,
        assigned_gt_inds: Tensor,
        candidate_mask: Tensor,
        num_expected: int,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Indices of the chosen positives, ``Tensor[K]`` int64 (see :class:`Sampler`)."""
        _check_inputs(assigned_gt_inds, candidate_mask, num_expected)
        if assigned_gt_inds.is_floating_point() or assigned_gt_inds.is_complex():
            raise ValueError(
                f"assigned_gt_inds must be an integer tensor, got {assigned_gt_inds.dtype}"
            )
        pos = _as_inds(candidate_mask)
        if pos.numel() <= num_expected:
            return pos
        gts = assigned_gt_inds[pos]
        num_gts = int(gts.unique().numel())
        cap = int(round(num_expected / float(num_gts)) + 1)
        # random rank of each positive within its gt: shuffle, then stable-sort by gt
        perm = torch.randperm(pos.numel(), generator=generator, device="cpu").to(pos.device)
        shuffled_gts = gts[perm]
        order = torch.sort(shuffled_gts, stable=True).indices
        sorted_gts = shuffled_gts[order]
        is_start = torch.ones_like(sorted_gts, dtype=torch.bool)
        is_start[1:] = sorted_gts[1:] != sorted_gts[:-1]
        position = torch.arange(pos.numel(), device=pos.device)
        group_start = torch.cummax(torch.where(is_start, position, 0), 0).values
        rank = position - group_start
        kept = pos[perm[order[rank < cap]]]

        chosen = torch.zeros_like(candidate_mask)
        chosen[kept] = True
        n = kept.numel()
        if n < num_expected:
            chosen |= _choose(candidate_mask & ~chosen, num_expected - n, generator)
        elif n > num_expected:
            chosen = _choose(chosen, num_expected, generator)
        return _as_inds(chosen)
