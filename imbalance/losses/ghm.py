"""Gradient Harmonizing Mechanism: GHM-C and GHM-R (Li, Liu and Wang, AAAI 2019).

Both losses reweight each element by the inverse density of its gradient norm, so that
no region of gradient norms (the many easy negatives, the few outliers) dominates. The
rules are those of the authors' released code (``shared/reference-notes.md``):

* gradient norm, detached: ``g = |σ(x) - y|`` (GHM-C) or ``|d| / sqrt(d² + μ²)`` (GHM-R);
* ``bins`` equal-width bins on [0, 1]; edges in float32, ``k / bins``; the top edge is
  nudged to ``1 + 1e-6`` (GHM-C, so ``g = 1`` falls inside) or ``1e3`` (GHM-R);
* an element is valid when its ``label_weight > 0`` (the magnitude is ignored);
  ``tot`` = number of valid elements (at least 1), ``n`` = number of non-empty bins;
* weight of a valid element ``w = tot / (n · count of its bin)``; with momentum ``m``,
  a running count per bin ``acc ← m·acc + (1 - m)·count`` replaces the count, updated
  for the non-empty bins only and starting from zero (no bias correction);
* loss ``= Σ w · L / tot`` where ``L`` is the element's BCE (GHM-C) or ASL1 (GHM-R);
  with no valid element the loss is 0 with a zero gradient.

Since ``tot`` cancels, the loss is the average over non-empty bins of each bin's mean loss.

Implementation: no Python loop over bins. The bin of each element comes from one
``floor(g · bins)`` (or ``torch.bucketize`` for the few bin counts where the floor could
disagree with the float32 edge comparisons by one ulp, see :func:`bin_index`), the
counts from one ``bincount``, the weights from a table lookup. The weights are constants
in the backward pass, so the gradient is the closed form ``w / tot · ∂L/∂x``, computed in
the forward, and the backward is a single multiplication.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imbalance.losses._elementwise import (
    as_float,
    check_positive,
    check_reduction,
    check_same_shape,
    reduce,
)

GHMC_TOP_EDGE = 1.0 + 1e-6
GHMR_TOP_EDGE = 1e3


def bin_edges(bins: int, top: float, device: torch.device | str | None = None) -> Tensor:
    """The ``bins + 1`` float32 edges ``k / bins`` with the last one replaced by ``top``."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=device) / bins
    edges[-1] = top
    return edges


def _floor_is_exact(bins: int) -> bool:
    """Memoised :func:`_check_floor_is_exact` (filled at import for up to 256 bins, so that
    ``torch.compile`` never traces the check)."""
    if bins not in _FLOOR_IS_EXACT:
        _FLOOR_IS_EXACT[bins] = _check_floor_is_exact(bins)
    return _FLOOR_IS_EXACT[bins]


def _check_floor_is_exact(bins: int) -> bool:
    """Whether ``floor(g · bins)`` puts every float32 ``g`` in [0, 1] in the same bin as
    comparing ``g`` with the float32 edges ``k / bins``.

    Both are non-decreasing step functions of ``g``, so they agree everywhere exactly
    when they agree at every interior edge and at the float32 number just below it.
    True for the bin counts of the released configs (10, 30) and for many others.
    """
    if bins == 1:
        return True
    edges = bin_edges(bins, GHMC_TOP_EDGE)[1:-1]
    below = torch.nextafter(edges, torch.zeros_like(edges))
    k = torch.arange(1, bins)
    return bool(
        torch.equal((edges * bins).floor().long(), k)
        and torch.equal((below * bins).floor().long(), k - 1)
    )


_FLOOR_IS_EXACT: dict[int, bool] = {b: _check_floor_is_exact(b) for b in range(1, 257)}


def _bin_index_(g: Tensor, bins: int, top: float) -> Tensor:
    """:func:`bin_index` that overwrites ``g``, a float32 scratch tensor."""
    if _floor_is_exact(bins):
        # Clamp the integers, not the floats: g = 1 goes to the last bin, and a NaN (whose
        # cast is undefined) to a valid one, so a NaN logit makes a NaN loss, never a crash.
        return g.mul_(bins).to(torch.int32).clamp_(0, bins - 1)
    edges = bin_edges(bins, top, device=g.device)
    return torch.bucketize(g, edges[1:-1], right=True, out_int32=True)


def bin_index(g: Tensor, bins: int, top: float = GHMC_TOP_EDGE) -> Tensor:
    """The bin of each gradient norm, as the authors' ``edges[k] <= g < edges[k + 1]``.

    Args:
        g: gradient norms in [0, 1] (any shape, any float dtype; compared in float32, as
            the authors' float32 edges are).
        bins: number of bins.
        top: the last edge (``g`` from 1 up to ``top`` falls in the last bin).

    Returns:
        int32 tensor shaped like ``g`` with values in ``[0, bins - 1]``.
    """
    return _bin_index_(g.to(torch.float32, copy=True), bins, top)


def _invalid_mask(label_weight: Tensor | None, like: Tensor) -> Tensor | None:
    """Where ``label_weight <= 0`` (ignored elements), expanded to ``like``'s shape."""
    if label_weight is None:
        return None
    try:
        torch.broadcast_shapes(label_weight.shape, like.shape)
    except RuntimeError:
        raise ValueError(
            f"label_weight of shape {tuple(label_weight.shape)} does not broadcast to "
            f"{tuple(like.shape)}"
        ) from None
    return (label_weight <= 0).expand_as(like)


def _count(idx: Tensor, size: int) -> Tensor:
    """How many elements fall in each of ``size`` bins, int64 (exact beyond 2**24)."""
    flat = idx.reshape(-1)
    if flat.device.type == "cpu" and not torch.compiler.is_compiling():
        return torch.bincount(flat, minlength=size)  # the fastest on CPU
    # index_add_ rather than bincount, whose output size depends on the largest index: a
    # device sync on CUDA, a graph break under torch.compile.
    ones = torch.ones((), dtype=torch.int64, device=flat.device).expand_as(flat)
    return torch.zeros(size, dtype=torch.int64, device=flat.device).index_add_(0, flat, ones)


def _harmonising_table(
    idx: Tensor, bins: int, acc_sum: Tensor | None, momentum: float
) -> tuple[Tensor, Tensor]:
    """Per-bin factors ``w / tot = 1 / (n · count)`` from bin indices (``bins`` = ignored).

    Returns ``(table, tot)``: ``table`` has ``bins + 1`` float32 entries, the last one 0 for
    ignored elements; ``tot`` is the number of valid elements, at least 1. Updates
    ``acc_sum`` in place when ``momentum > 0``.
    """
    counts = _count(idx, bins + 1).to(torch.float32)
    counts[bins] = 0
    nonempty = counts > 0
    tot = counts.sum().clamp_(min=1)
    n = nonempty.sum().clamp_(min=1)
    if momentum > 0:
        assert acc_sum is not None
        running = torch.where(
            nonempty[:bins], momentum * acc_sum + (1 - momentum) * counts[:bins], acc_sum
        )
        acc_sum.copy_(running)
        counts[:bins] = running
    return torch.where(nonempty, 1 / (n * counts), 0), tot


def _indices_(g: Tensor, invalid: Tensor | None, bins: int, top: float) -> Tensor:
    """Bin index of each element (overwriting ``g``); ``bins`` for ignored elements."""
    idx = _bin_index_(g, bins, top)
    if invalid is not None:
        idx.masked_fill_(invalid, bins)
    return idx


def _lookup(table: Tensor, idx: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.index_select(table.to(dtype), 0, idx.reshape(-1)).view(idx.shape)


def ghm_c_weights(
    inputs: Tensor,
    targets: Tensor,
    label_weight: Tensor | None = None,
    bins: int = 30,
    acc_sum: Tensor | None = None,
    momentum: float = 0.0,
) -> Tensor:
    """GHM-C's weight of each element, ``tot / (n · count of its bin)``; 0 where invalid.

    What :func:`ghm_c_loss` multiplies each element's cross-entropy by (before dividing
    by ``tot``). ``acc_sum`` (float32, ``(bins,)``) is updated in place when
    ``momentum > 0``. Detached; float32, shaped like ``inputs``.
    """
    with torch.no_grad():
        x, t = as_float(inputs), as_float(targets)
        g = torch.sigmoid(x).sub_(t).abs_().float()
        idx = _indices_(g, _invalid_mask(label_weight, x), bins, GHMC_TOP_EDGE)
        table, tot = _harmonising_table(idx, bins, acc_sum, momentum)
        return _lookup(table * tot, idx, x.dtype)


def _ghm_c_forward(x, t, invalid, bins, acc_sum, momentum, need_grad):
    """GHM-C loss and, if asked, its gradient ``w / tot · (σ(x) - t)`` (few fresh tensors)."""
    d = torch.sigmoid(x).sub_(t)
    idx = _indices_(d.abs().float(), invalid, bins, GHMC_TOP_EDGE)
    table, _ = _harmonising_table(idx, bins, acc_sum, momentum)
    w = _lookup(table, idx, x.dtype)
    ce = F.softplus(x).addcmul_(t, x, value=-1)  # log(1 + e^x) - t x
    loss = torch.dot(w.reshape(-1), ce.reshape(-1))
    return loss, (w.mul_(d) if need_grad else None)


def _ghm_r_forward(d, invalid, mu, bins, acc_sum, momentum, need_grad):
    """GHM-R loss and, if asked, its gradient ``w / tot · d / sqrt(d² + μ²)``."""
    r = torch.addcmul(d.new_full((), mu * mu), d, d).sqrt_()
    s = d / r  # signed gradient norm, the derivative of ASL1
    idx = _indices_(s.abs().float(), invalid, bins, GHMR_TOP_EDGE)
    table, _ = _harmonising_table(idx, bins, acc_sum, momentum)
    w = _lookup(table, idx, d.dtype)
    loss = torch.dot(w.reshape(-1), r.sub_(mu).reshape(-1))
    return loss, (w.mul_(s) if need_grad else None)


class _GHMLoss(torch.autograd.Function):
    """A GHM loss whose backward multiplies the gradient computed by the forward."""

    @staticmethod
    def forward(ctx, forward_fn, *args):  # type: ignore[override]
        loss, grad = forward_fn(*args, need_grad=ctx.needs_input_grad[1])
        ctx.save_for_backward(grad)
        ctx.num_rest = len(args) - 1
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (None, grad * grad_out) + (None,) * ctx.num_rest


def _apply(forward_fn, first: Tensor, *args) -> Tensor:
    if torch.is_grad_enabled() and first.requires_grad:
        return _GHMLoss.apply(forward_fn, first, *args)
    return forward_fn(first.detach(), *args, need_grad=False)[0]


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def _check_momentum(momentum: float) -> None:
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")


def _ghm_c(inputs, targets, label_weight, bins, acc_sum, momentum) -> Tensor:
    check_same_shape(inputs, targets, ("inputs", "targets"))
    _check_bins(bins)
    x = as_float(inputs)
    t = as_float(targets).to(x.dtype).detach()
    invalid = _invalid_mask(label_weight, x)
    return _apply(_ghm_c_forward, x, t, invalid, bins, acc_sum, momentum)


def ghm_c_loss(
    inputs: Tensor, targets: Tensor, label_weight: Tensor | None = None, bins: int = 30
) -> Tensor:
    r"""GHM-C loss without momentum: sigmoid BCE reweighted by inverse gradient density.

    .. math:: L_{GHM\text{-}C} = \frac{1}{tot} \sum_i \frac{tot}{n \cdot \#\mathrm{bin}(g_i)}
              \mathrm{CE}_i, \qquad g_i = |\sigma(x_i) - y_i|

    Args:
        inputs: logits, float tensor of any shape, e.g. ``(num_anchors, num_classes)``.
        targets: binary float tensor of the same shape (one-vs-all targets).
        label_weight: optional tensor broadcastable to ``inputs``; elements with
            ``label_weight > 0`` are valid (ignored anchors have 0).
        bins: number of equal-width bins of the gradient norm on [0, 1].

    Returns:
        scalar float32 loss (float64 for float64 inputs). See the module docstring for
        the exact rules; :class:`GHMC` adds the running (EMA) bin counts.
    """
    return _ghm_c(inputs, targets, label_weight, bins, None, 0.0)


def asl1_loss(pred: Tensor, target: Tensor, mu: float = 0.02, reduction: str = "none") -> Tensor:
    r"""Authentic smooth L1 (GHM paper): :math:`\sqrt{d^2 + \mu^2} - \mu` with d = pred - target.

    Quadratic for :math:`|d| \ll \mu`, close to :math:`|d| - \mu` for :math:`|d| \gg \mu`;
    its gradient :math:`d / \sqrt{d^2 + \mu^2}` is smooth and never saturates abruptly.

    Args:
        pred, target: float tensors of the same shape, e.g. ``(num_pos, 4)`` box deltas.
        mu: the smoothing scale, > 0.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """
    check_reduction(reduction)
    check_same_shape(pred, target, ("pred", "target"))
    check_positive(mu, "mu")
    d = as_float(pred) - as_float(target)
    return reduce(torch.sqrt(d * d + mu * mu) - mu, reduction)


def _ghm_r(pred, target, label_weight, mu, bins, acc_sum, momentum) -> Tensor:
    check_same_shape(pred, target, ("pred", "target"))
    _check_bins(bins)
    check_positive(mu, "mu")
    d = as_float(pred) - as_float(target)
    invalid = _invalid_mask(label_weight, d)
    return _apply(_ghm_r_forward, d, invalid, float(mu), bins, acc_sum, momentum)


def ghm_r_loss(
    pred: Tensor,
    target: Tensor,
    label_weight: Tensor | None = None,
    mu: float = 0.02,
    bins: int = 10,
) -> Tensor:
    r"""GHM-R loss without momentum: ASL1 reweighted by the density of its gradient norm.

    .. math:: L_{GHM\text{-}R} = \frac{1}{tot} \sum_i \frac{tot}{n \cdot \#\mathrm{bin}(gr_i)}
              \mathrm{ASL1}(d_i), \qquad gr_i = \frac{|d_i|}{\sqrt{d_i^2 + \mu^2}}

    Element-wise over the coordinates (a box contributes four elements).

    Args:
        pred, target: float tensors of the same shape, e.g. ``(num_anchors, 4)``.
        label_weight: optional tensor broadcastable to ``pred``; ``> 0`` marks valid
            elements (the positives). The authors take ``tot = Σ label_weight``; it cancels
            in the loss, so we count valid elements as GHM-C does.
        mu: ASL1's smoothing scale, > 0.
        bins: number of equal-width bins of ``gr`` on [0, 1).

    Returns:
        scalar float32 loss; the gradient flows to ``pred`` (and to ``target`` if it
        requires one).
    """
    return _ghm_r(pred, target, label_weight, mu, bins, None, 0.0)


class _GHMBase(nn.Module):
    acc_sum: Tensor

    def __init__(self, bins: int, momentum: float) -> None:
        super().__init__()
        _check_bins(bins)
        _check_momentum(momentum)
        self.bins = bins
        self.momentum = momentum
        self.register_buffer("acc_sum", torch.zeros(bins, dtype=torch.float32))

    def reset(self) -> None:
        """Forget the running bin counts."""
        self.acc_sum.zero_()

    def _state(self) -> tuple[Tensor | None, float]:
        if self.momentum > 0 and self.training:
            return self.acc_sum, self.momentum
        return None, 0.0

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}"


class GHMC(_GHMBase):
    """GHM-C with running (EMA) bin counts; see :func:`ghm_c_loss`.

    The buffer ``acc_sum`` (float32, ``(bins,)``) holds the running count of each bin. It
    is updated in training mode only; in eval mode the loss uses this batch's counts.
    Defaults are those of the released config (30 bins, momentum 0.75).
    """

    def __init__(self, bins: int = 30, momentum: float = 0.75) -> None:
        super().__init__(bins, momentum)

    def forward(
        self, inputs: Tensor, targets: Tensor, label_weight: Tensor | None = None
    ) -> Tensor:
        acc_sum, momentum = self._state()
        return _ghm_c(inputs, targets, label_weight, self.bins, acc_sum, momentum)


class GHMR(_GHMBase):
    """GHM-R with running (EMA) bin counts; see :func:`ghm_r_loss`.

    Defaults are those of the released config (μ = 0.02, 10 bins, momentum 0.7).
    """

    def __init__(self, mu: float = 0.02, bins: int = 10, momentum: float = 0.7) -> None:
        super().__init__(bins, momentum)
        check_positive(mu, "mu")
        self.mu = mu

    def forward(self, pred: Tensor, target: Tensor, label_weight: Tensor | None = None) -> Tensor:
        acc_sum, momentum = self._state()
        return _ghm_r(pred, target, label_weight, self.mu, self.bins, acc_sum, momentum)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, " + super().extra_repr()
