"""Measuring imbalance in gradients: the numbers the GHM and Libra R-CNN chapters start from.

Everything here is for analysis, not for training: results are detached, and the share
functions return Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from imbalance.losses._elementwise import as_float, check_positive, check_same_shape
from imbalance.losses.ghm import GHMC_TOP_EDGE, bin_edges, bin_index


def sigmoid_ce_grad_norm(inputs: Tensor, targets: Tensor) -> Tensor:
    r"""Per-element gradient norm of sigmoid cross-entropy, :math:`g = |\sigma(x) - y|`.

    ``∂CE/∂x = σ(x) - y``, so g is how hard each element pulls on its logit: near 0 for
    easy elements, near 1 for elements the model gets confidently wrong.

    Args:
        inputs: logits, float tensor of any shape.
        targets: float tensor of the same shape (binary, or soft in [0, 1]).

    Returns:
        tensor shaped like ``inputs`` (float32, or float64 for float64 inputs), values in
        [0, 1], detached.
    """
    check_same_shape(inputs, targets, ("inputs", "targets"))
    with torch.no_grad():
        return (torch.sigmoid(as_float(inputs)) - as_float(targets)).abs_()


def regression_grad_norm(pred: Tensor, target: Tensor, mu: float = 0.02) -> Tensor:
    r"""GHM-R's gradient norm of ASL1, :math:`gr = |d| / \sqrt{d^2 + \mu^2}`, in [0, 1)."""
    check_same_shape(pred, target, ("pred", "target"))
    check_positive(mu, "mu")
    with torch.no_grad():
        d = as_float(pred) - as_float(target)
        return d.abs() / torch.sqrt(d * d + mu * mu)


@dataclass(frozen=True)
class GradientDensity:
    """A histogram of gradient norms over GHM's bins.

    Attributes:
        edges: ``(bins + 1,)`` float32 bin edges on [0, 1].
        counts: ``(bins,)`` int64 number of valid elements per bin.
        fraction: ``(bins,)`` float64, ``counts / total``.
        density: ``(bins,)`` float64, GHM's gradient density ``GD``: the number of elements
            per unit length of gradient norm, ``counts / bin width``.
    """

    edges: Tensor
    counts: Tensor
    fraction: Tensor
    density: Tensor


def gradient_density(
    g: Tensor, bins: int = 30, label_weight: Tensor | None = None
) -> GradientDensity:
    """Histogram the gradient norms ``g`` exactly as GHM bins them.

    Args:
        g: gradient norms in [0, 1], any shape (e.g. from :func:`sigmoid_ce_grad_norm`).
        bins: number of equal-width bins on [0, 1].
        label_weight: optional, broadcastable to ``g``; only elements with
            ``label_weight > 0`` are counted.
    """
    g = as_float(g).detach().float()
    if label_weight is not None:
        g = g[(label_weight > 0).expand_as(g)]
    idx = bin_index(g.reshape(-1), bins, GHMC_TOP_EDGE)
    counts = torch.bincount(idx, minlength=bins)[:bins].cpu()
    edges = bin_edges(bins, 1.0)
    total = max(int(counts.sum()), 1)
    return GradientDensity(
        edges=edges,
        counts=counts,
        fraction=counts.double() / total,
        density=counts.double() / (1.0 / bins),
    )


@dataclass(frozen=True)
class GradientShare:
    """How the elements, and what they carry, split into easy / medium / hard.

    Attributes:
        thresholds: the gradient norms ``(easy_below, hard_from)`` that define the groups:
            easy ``g < easy_below``, hard ``g >= hard_from``, medium in between.
        count: the fraction of elements in each group.
        share: the fraction of ``Σ values`` carried by each group (``values`` defaults to
            ``g`` itself: the share of the total gradient norm).
    """

    thresholds: tuple[float, float]
    count: dict[str, float]
    share: dict[str, float]


def gradient_share(
    g: Tensor,
    values: Tensor | None = None,
    label_weight: Tensor | None = None,
    thresholds: tuple[float, float] = (0.1, 0.9),
) -> GradientShare:
    """Share of the total gradient (or loss) carried by easy, medium and hard elements.

    With sigmoid cross-entropy an element's gradient norm is ``g = |p - y|``; with the
    default thresholds *easy* means confidently right (``p_t > 0.9``), *hard* confidently
    wrong (``p_t <= 0.1``).

    Args:
        g: gradient norms in [0, 1], any shape.
        values: what to share out, shaped like ``g`` (e.g. each element's loss, or a
            reweighted gradient); defaults to ``g``.
        label_weight: optional, broadcastable to ``g``; elements with ``label_weight <= 0``
            are left out.
        thresholds: ``(easy_below, hard_from)`` with ``0 < easy_below <= hard_from <= 1``.
    """
    easy_below, hard_from = thresholds
    if not 0 < easy_below <= hard_from <= 1:
        raise ValueError(f"thresholds must satisfy 0 < easy <= hard <= 1, got {thresholds}")
    g = as_float(g).detach()
    v = g if values is None else as_float(values).detach()
    check_same_shape(g, v, ("g", "values"))
    if label_weight is not None:
        keep = (label_weight > 0).expand_as(g)
        g, v = g[keep], v[keep]
    groups = {"easy": g < easy_below, "medium": (g >= easy_below) & (g < hard_from)}
    groups["hard"] = g >= hard_from
    n = max(g.numel(), 1)
    total = float(v.sum())
    count = {k: float(m.sum()) / n for k, m in groups.items()}
    share = {k: (float(v[m].sum()) / total if total > 0 else 0.0) for k, m in groups.items()}
    return GradientShare(thresholds=(easy_below, hard_from), count=count, share=share)
