"""The fast path of the losses: the values of the readable modules, computed faster.

:mod:`~imbalance.losses.cross_entropy`, :mod:`~imbalance.losses.focal` and
:mod:`~imbalance.losses.ghm` write the papers' equations and let autograd differentiate
them. They hand over to this module whenever the gradient is needed with respect to the
logits (or the regression difference) only, which is every training step; targets that
require a gradient take the readable path. The tests check that both paths agree in
values, gradients and GHM's running counts. What makes this path faster:

* **Closed-form backward.** The forward computes ∂L/∂x along with L (:class:`_ClosedForm`),
  so the backward is one multiplication instead of autograd replaying twenty operations.
* **Few fresh tensors, in-place arithmetic.** A fresh tensor of a detector's size costs new
  memory pages, more than most of the arithmetic done in it.
* **Blocks on the CPU.** Large inputs are processed in blocks of ``BLOCK`` elements per
  thread, whose intermediates are small enough to be reused without new pages and to stay
  in cache; only the gradient (and the element-wise loss for ``reduction="none"``) is
  written at full size. On an accelerator and under ``torch.compile``, one block.
* **GHM's bins by one multiplication.** ``floor(g · bins)`` where it provably equals the
  comparisons with the float32 edges (:func:`_floor_is_exact`), else ``torch.bucketize``;
  counts by ``bincount`` on the CPU (in lanes, :func:`_count_in_lanes`) and ``index_add_``
  elsewhere (``bincount``'s output size depends on the data: a device synchronisation on
  CUDA, a graph break under compile).

**Exactness.** The formulas are rearranged so that no subtraction cancels. With a = |x|,
s = σ(−a) ≤ 1/2 (one sigmoid, never computed as 1 − another), H = [x ≥ 0] and
v = H − t (exactly 1 − t or −t), p = σ(x) is H + s̃ with s̃ = (1 − 2H)s = ±s, and

* CE = t·softplus(−x) + (1 − t)·softplus(x) = log(1 + e^−a) + x·v  (two non-negative terms);
* ∂CE/∂x = (1 − t)p − t(1 − p) = v + s̃  (one rounding for binary targets);
* 1 − p_t = p(1 − t) + (1 − p)t = |v| + s̃(1 − 2t)  (at least 1/2 when the terms differ
  in sign); ∂(1 − p_t)/∂x = p(1 − p)(1 − 2t) = s(1 − s)(1 − 2t);
* ASL1 = √(d² + μ²) − μ = d² / (√(d² + μ²) + μ).

GHM's gradient norms g are computed as in the authors' code (``|σ(x) − t|``, ``|d / √(d² +
μ²)|``), so that every element falls in the bin the readable path and the authors' loop give.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

BLOCK = 1 << 16
"""Elements per thread in one CPU block."""

GHM_ONE_BLOCK = 1 << 20
"""Elements per thread up to which GHM takes one block (it does more work per block)."""

_enabled = True


def applies(targets: Tensor | None = None) -> bool:
    """Whether a loss takes this path: always, unless its ``targets`` need a gradient too
    (this path differentiates with respect to the first argument only) or within
    :func:`disabled`."""
    return _enabled and not (
        targets is not None and torch.is_grad_enabled() and targets.requires_grad
    )


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, every loss takes its readable path (tests and benchmarks)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _blocks(n: int, device: torch.device, one_block: int = 2 * BLOCK) -> list[slice]:
    """The blocks of a flattened tensor of ``n`` elements: one off the CPU, under compile,
    or up to ``one_block`` elements per thread."""
    threads = max(1, torch.get_num_threads())
    if device.type != "cpu" or torch.compiler.is_compiling() or n <= one_block * threads:
        return [slice(0, n)]
    size = BLOCK * threads
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class _ClosedForm(torch.autograd.Function):
    """A loss computed with its own gradient: ``fn(x, *args, need_grad) -> (loss, ∂loss/∂x)``.

    The backward multiplies the saved gradient by the upstream one: element-wise when
    the loss is element-wise, by a scalar when it is a sum.
    """

    @staticmethod
    def forward(ctx, fn: Callable[..., tuple[Tensor, Tensor | None]], x: Tensor, *args):  # type: ignore[override]
        loss, grad = fn(x, *args, need_grad=True)
        ctx.save_for_backward(grad)
        ctx.num_args = len(args)
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (None, grad * grad_out) + (None,) * ctx.num_args


def _apply(fn: Callable[..., tuple[Tensor, Tensor | None]], x: Tensor, *args) -> Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _ClosedForm.apply(fn, x, *args)
    return fn(x.detach(), *args, need_grad=False)[0]


def _blockwise(
    kernel: Callable[[slice, bool], tuple[Tensor, Tensor | None]],
    like: Tensor,
    total: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """An element-wise loss (its sum if ``total``) and its gradient, by blocks of the
    flattened input ``like``: ``kernel(block, need_grad) -> (loss, ∂loss)`` of one block."""
    blocks = _blocks(like.numel(), like.device)
    if len(blocks) == 1:
        loss, grad = kernel(blocks[0], need_grad)
        return (loss.sum() if total else loss), grad if need_grad else None
    sums = like.new_empty(len(blocks))
    loss = sums if total else torch.empty_like(like)
    grad = torch.empty_like(like) if need_grad else None
    for i, blk in enumerate(blocks):
        block_loss, block_grad = kernel(blk, need_grad)
        if total:
            torch.sum(block_loss, dim=0, out=sums[i])
        else:
            loss[blk] = block_loss
        if grad is not None:
            grad[blk] = block_grad
    return (sums.sum() if total else loss), grad


# --- sigmoid cross-entropy and focal loss --------------------------------------------------


def _scale_by_alpha_t(v: Tensor, t: Tensor, alpha: float) -> Tensor:
    """``v *= α_t = α t + (1 - α)(1 - t)`` in place, without a tensor for α_t."""
    if alpha == 1:
        return v.mul_(t)
    # (1 - α) v (1 + c t) = v (α t + (1 - α)(1 - t)) with c = (2α - 1) / (1 - α)
    v.mul_(1 - alpha)
    return v.addcmul_(v, t, value=(2 * alpha - 1) / (1 - alpha))


def _focal_block(
    x: Tensor, t: Tensor, alpha: float, gamma: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Element-wise focal loss α_t q^γ CE of one block, q = 1 - p_t, and if asked

        ∂FL/∂x = α_t q^(γ-1) [q ∂CE/∂x + γ CE ∂q/∂x]

    with the exact forms of the module docstring (γ = 0: the α-balanced cross-entropy;
    α < 0: no α_t). Three fresh tensors (four for γ > 0).
    """
    ce = torch.abs(x).neg_()  # -|x|
    s = torch.sigmoid(ce) if need_grad or gamma != 0 else None  # σ(-|x|)
    ce.exp_().log1p_()  # log(1 + e^-|x|)
    v = torch.ge(x, 0, out=torch.empty_like(x))  # H
    if s is not None:
        s.addcmul_(s, v, value=-2)  # s̃ = (1 - 2H) s = p - H
    ce.addcmul_(v.sub_(t), x)  # CE, with v = H - t
    grad = factor = None
    if gamma == 0:
        if need_grad:
            grad = v.add_(s)  # ∂CE/∂x = v + s̃
    else:
        q = torch.abs(v).add_(s).addcmul_(t, s, value=-2)  # 1 - p_t = |v| + s̃ (1 - 2t)
        if need_grad:
            grad = v.add_(s)
            dq = s.abs_()  # s
            dq.addcmul_(dq, dq, value=-1)  # s (1 - s) = p (1 - p)
            dq.addcmul_(dq, t, value=-2).mul_(ce)  # CE ∂q/∂x
            grad.mul_(q).add_(dq, alpha=gamma)  # q ∂CE/∂x + γ CE ∂q/∂x
        ce.mul_(q)
        if gamma != 2:
            zero = q == 0 if gamma < 1 else None
            q.pow_(gamma - 1)
            if zero is not None:  # q^(γ-1) is infinite where q = 0; CE q and CE ∂q/∂x are 0
                q.masked_fill_(zero, 0)
        factor = q  # q^(γ-1)
    if alpha >= 0:
        if factor is not None:
            _scale_by_alpha_t(factor, t, alpha)
        else:
            _scale_by_alpha_t(ce, t, alpha)
            if grad is not None:
                _scale_by_alpha_t(grad, t, alpha)
    if factor is not None:
        ce.mul_(factor)
        if grad is not None:
            grad.mul_(factor)
    return ce, grad


def _focal(
    x: Tensor, t: Tensor, alpha: float, gamma: float, total: bool, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    xf, tf = x.reshape(-1), t.reshape(-1)
    loss, grad = _blockwise(
        lambda b, need: _focal_block(xf[b], tf[b], alpha, gamma, need), xf, total, need_grad
    )
    return (loss if total else loss.view(x.shape)), None if grad is None else grad.view(x.shape)


def sigmoid_focal_loss(x: Tensor, t: Tensor, alpha: float, gamma: float, reduction: str) -> Tensor:
    """:func:`imbalance.losses.sigmoid_focal_loss` of float logits ``x`` and targets ``t`` of
    one shape and dtype (arguments checked by the caller); ``gamma = 0`` gives the
    (α-balanced) cross-entropy."""
    loss = _apply(_focal, x, t, float(alpha), float(gamma), reduction != "none")
    return loss / max(x.numel(), 1) if reduction == "mean" else loss


# --- ASL1 ------------------------------------------------------------------------------------


def _asl1_block(d: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """ASL1 of one block and its derivative d / √(d² + μ²), rounded as in the authors' code
    (whose absolute value is GHM-R's gradient norm)."""
    r = (d * d).add_(mu * mu).sqrt_()
    grad = torch.div(d, r)
    return r.add_(mu).reciprocal_().mul_(d).mul_(d), grad


def _asl1(d: Tensor, mu: float, total: bool, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    df = d.reshape(-1)
    loss, grad = _blockwise(lambda b, need: _asl1_block(df[b], mu), df, total, need_grad)
    return (loss if total else loss.view(d.shape)), None if grad is None else grad.view(d.shape)


def asl1_loss(d: Tensor, mu: float, reduction: str) -> Tensor:
    """:func:`imbalance.losses.asl1_loss` of the float difference ``d = pred - target``."""
    loss = _apply(_asl1, d, float(mu), reduction != "none")
    return loss / max(d.numel(), 1) if reduction == "mean" else loss


# --- GHM -------------------------------------------------------------------------------------


def _edges(bins: int, top: float, device: torch.device | str | None = None) -> Tensor:
    """:func:`imbalance.losses.ghm.bin_edges` (the tests check that they are equal)."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=device) / bins
    edges[-1] = top
    return edges


def _check_floor_is_exact(bins: int) -> bool:
    """Whether ``floor(g · bins)`` puts every float32 ``g`` in [0, 1] in the same bin as
    comparing ``g`` with the float32 edges ``k / bins``.

    Both are non-decreasing step functions of ``g``, so they agree everywhere exactly
    when they agree at every interior edge and at the float32 number just below it.
    True for the bin counts of the released configs (10, 30) and for many others.
    """
    if bins == 1:
        return True
    edges = _edges(bins, 1.0)[1:-1]
    below = torch.nextafter(edges, torch.zeros_like(edges))
    k = torch.arange(1, bins)
    return bool(
        torch.equal((edges * bins).floor().long(), k)
        and torch.equal((below * bins).floor().long(), k - 1)
    )


# Filled at import for up to 256 bins, so that torch.compile never traces the check.
_FLOOR_IS_EXACT: dict[int, bool] = {b: _check_floor_is_exact(b) for b in range(1, 257)}


def _floor_is_exact(bins: int) -> bool:
    """Memoised :func:`_check_floor_is_exact`."""
    if bins not in _FLOOR_IS_EXACT:
        _FLOOR_IS_EXACT[bins] = _check_floor_is_exact(bins)
    return _FLOOR_IS_EXACT[bins]


def floor_bin_index(g: Tensor, bins: int, top: float) -> Tensor:
    """:func:`imbalance.losses.ghm.bin_index` of a float32 tensor ``g``, whose memory it
    reuses for the int32 result (``g`` is overwritten)."""
    if not _floor_is_exact(bins):
        return torch.bucketize(g, _edges(bins, top, g.device)[1:-1], right=True, out_int32=True)
    # Truncation is floor for g >= 0; the conversion writes each element over itself.
    idx = g.view(torch.int32).copy_(g.mul_(bins))
    # Clamp the integers, not the floats: g = 1 goes to the last bin, and a NaN (whose
    # conversion is undefined) to a valid one, so a NaN logit makes a NaN loss, not a crash.
    return idx.clamp_(0, bins - 1)


LANES = 16


def _count_in_lanes(idx: Tensor, size: int) -> tuple[Tensor, int]:
    """How many elements of the flat int32 ``idx`` fall in each of ``size`` bins (int64,
    exact beyond 2**24), and the number of lanes ``idx`` now indexes: on the CPU, element i
    moves to lane i mod LANES (``idx`` gains ``(i mod LANES) · size``, in place), so that a
    lookup in ``LANES`` copies of a per-bin table still finds its bin's entry."""
    if idx.device.type != "cpu" or torch.compiler.is_compiling():
        # index_add_ rather than bincount, whose output size depends on the largest index:
        # a device synchronisation on CUDA, a graph break under torch.compile.
        ones = torch.ones((), dtype=torch.int64, device=idx.device).expand_as(idx)
        counts = torch.zeros(size, dtype=torch.int64, device=idx.device)
        return counts.index_add_(0, idx, ones), 1
    if idx.numel() < 64 * LANES:
        return torch.bincount(idx, minlength=size), 1
    # bincount adds 1 to one counter per element; with most elements in one bin (the easy
    # examples), each addition waits for the previous one. Consecutive elements counted in
    # LANES copies of the bins, summed at the end, do not wait for each other.
    n, offsets = idx.numel(), torch.arange(0, LANES * size, size, dtype=idx.dtype)
    m = n - n % LANES
    idx[:m].view(-1, LANES).add_(offsets)
    idx[m:].add_(offsets[: n - m])
    return torch.bincount(idx, minlength=LANES * size).view(LANES, size).sum(0), LANES


def _weight_table(
    counts: Tensor, acc_sum: Tensor | None, momentum: float, dtype: torch.dtype
) -> Tensor:
    """``w / tot`` per bin, ``w = tot / (n · count)`` rounded to float32 as in the readable
    path, from the ``bins + 1`` counts (the last one, of the ignored elements, gets 0); in
    ``dtype``. With momentum, updates ``acc_sum`` in place and uses it for non-empty bins."""
    counts = counts[:-1].to(torch.float32)
    tot, nonempty = counts.sum().clamp_(min=1), counts > 0
    n = nonempty.sum().clamp_(min=1)
    if momentum > 0 and acc_sum is not None:
        counts = torch.where(nonempty, momentum * acc_sum + (1 - momentum) * counts, acc_sum)
        acc_sum.copy_(counts)
    w = torch.where(nonempty, tot / (n * counts), 0)
    return torch.nn.functional.pad(w.to(dtype) / tot.to(dtype), (0, 1))


def _harmonised(
    block: Callable[[slice, bool], tuple[Tensor, Tensor, Tensor | None]],
    like: Tensor,
    invalid: Tensor | None,
    bins: int,
    top: float,
    acc_sum: Tensor | None,
    momentum: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Σ w · L / tot and its gradient w / tot · ∂L over the flattened input ``like``, from
    ``block(slice, need_grad) -> (g, L, ∂L)`` (g: float32 gradient norms, overwritten).

    In one block: bin, count, weigh. In several (large inputs on the CPU), each block is
    binned and counted, and its L, ∂L and bin indices (one byte each) are kept; once all
    blocks are counted, each is weighed.
    """
    blocks = _blocks(like.numel(), like.device, GHM_ONE_BLOCK)
    if len(blocks) == 1:
        g, loss, grad = block(blocks[0], need_grad)
        idx = floor_bin_index(g, bins, top)
        if invalid is not None:
            idx.masked_fill_(invalid, bins)
        counts, lanes = _count_in_lanes(idx, bins + 1)
        table = _weight_table(counts, acc_sum, momentum, like.dtype)
        w = torch.index_select(table.repeat(lanes), 0, idx)
        return torch.dot(w, loss), None if grad is None else grad.mul_(w)
    stored = torch.empty(like.numel(), dtype=torch.uint8 if bins < 256 else torch.int32)
    losses, counts = torch.empty_like(like), torch.zeros(bins + 1, dtype=torch.int64)
    grad = torch.empty_like(like) if need_grad else None
    for blk in blocks:
        g, block_loss, block_grad = block(blk, need_grad)
        idx = floor_bin_index(g, bins, top)
        if invalid is not None:
            idx.masked_fill_(invalid[blk], bins)
        stored[blk], losses[blk] = idx, block_loss
        counts += _count_in_lanes(idx, bins + 1)[0]
        if grad is not None:
            grad[blk] = block_grad
    table = _weight_table(counts, acc_sum, momentum, like.dtype)
    sums = like.new_empty(len(blocks))
    for i, blk in enumerate(blocks):
        w = torch.index_select(table, 0, stored[blk].int())
        torch.dot(w, losses[blk], out=sums[i])
        if grad is not None:
            grad[blk].mul_(w)
    return sums.sum(), grad


def _ghm_c_block(x: Tensor, t: Tensor, need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """GHM-C's g = |σ(x) - t| (float32, rounded as in the authors' code), CE and, if
    asked, ∂CE/∂x, of one block."""
    g = torch.sigmoid(x).sub_(t).abs_().float()
    return g, *_focal_block(x, t, -1.0, 0.0, need_grad)


def _ghm_c(
    x: Tensor,
    t: Tensor,
    invalid: Tensor | None,
    bins: int,
    top: float,
    acc_sum: Tensor | None,
    momentum: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    xf, tf = x.reshape(-1), t.reshape(-1)
    loss, grad = _harmonised(
        lambda b, need: _ghm_c_block(xf[b], tf[b], need),
        xf,
        invalid,
        bins,
        top,
        acc_sum,
        momentum,
        need_grad,
    )
    return loss, None if grad is None else grad.view(x.shape)


def _ghm_r(
    d: Tensor,
    invalid: Tensor | None,
    mu: float,
    bins: int,
    top: float,
    acc_sum: Tensor | None,
    momentum: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    df = d.reshape(-1)

    def block(b: slice, need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        loss, grad = _asl1_block(df[b], mu)
        return grad.abs().float(), loss, grad if need_grad else None

    loss, grad = _harmonised(
        block,
        df,
        invalid,
        bins,
        top,
        acc_sum,
        momentum,
        need_grad,
    )
    return loss, None if grad is None else grad.view(d.shape)


def _invalid(valid: Tensor | None) -> Tensor | None:
    return None if valid is None else valid.logical_not().reshape(-1)


def ghm_c_loss(
    x: Tensor,
    t: Tensor,
    valid: Tensor | None,
    bins: int,
    top: float,
    acc_sum: Tensor | None,
    momentum: float,
) -> Tensor:
    """GHM-C of float logits ``x`` and detached targets ``t`` (one shape and dtype); ``valid``:
    bool mask shaped like ``x``, or ``None`` for all. See :mod:`imbalance.losses.ghm`."""
    return _apply(_ghm_c, x, t, _invalid(valid), bins, top, acc_sum, momentum)


def ghm_r_loss(
    d: Tensor,
    valid: Tensor | None,
    mu: float,
    bins: int,
    top: float,
    acc_sum: Tensor | None,
    momentum: float,
) -> Tensor:
    """GHM-R of the float difference ``d = pred - target`` (autograd carries the gradient
    on to ``pred`` and ``target``); ``valid`` as in :func:`ghm_c_loss`."""
    return _apply(_ghm_r, d, _invalid(valid), float(mu), bins, top, acc_sum, momentum)
