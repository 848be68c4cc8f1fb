"""Gradient Harmonizing Mechanism and GHM-C (Li, Liu and Wang, AAAI 2019), by the rules of the
authors' code (``shared/reference-notes.md``; their loop over bins: :mod:`.reference`). GHM-R,
the same mechanism on box regression, is :mod:`.ghm_r`.

Each element's loss L is weighted by w = tot / (n · count of the bin of its gradient norm g),
g = ``|σ(x) - y|`` (GHM-C) or ``|d| / sqrt(d² + μ²)``, d = pred - target (GHM-R), detached.
Bins: float32 edges ``k / bins``, the top one ``1 + 1e-6`` (GHM-C) or ``1e3`` (GHM-R). Valid:
``label_weight > 0``; tot = their number (at least 1); n = non-empty bins. With momentum m, a
running count acc ← m·acc + (1 - m)·count replaces the count, moved in training mode, for
non-empty bins only, from zero (no bias correction). Loss = Σ w · L / tot; 0 with a zero
gradient if nothing is valid. Training steps take :mod:`._fused`, the same with a closed form.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imbalance.losses import _fused
from imbalance.losses._elementwise import as_float, check_args, valid_mask
from imbalance.losses.cross_entropy import binary_cross_entropy

GHMC_TOP_EDGE = 1.0 + 1e-6


def bin_edges(bins: int, top: float, device: torch.device | str | None = None) -> Tensor:
    """The ``bins + 1`` float32 edges ``k / bins``, the last one replaced by ``top``."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=device) / bins
    edges[-1] = top
    return edges


def bin_index(g: Tensor, bins: int, top: float = GHMC_TOP_EDGE) -> Tensor:
    """Bin k of each g, ``edges[k] <= g < edges[k + 1]`` in float32: int32, shaped like g."""
    edges = bin_edges(bins, top, g.device)[1:-1]
    return torch.bucketize(g.float(), edges, right=True, out_int32=True)


def harmonising_weights(g: Tensor, valid: Tensor, bins: int, top: float,
                        acc_sum: Tensor | None = None, momentum: float = 0.0) -> Tensor:
    """w of each g (float32, shaped like g, 0 where the bool ``valid`` is False); updates
    ``acc_sum`` (float32, ``(bins,)``) in place when ``momentum > 0``."""
    idx = bin_index(g, bins, top).long()
    count = torch.zeros(bins, dtype=torch.int64, device=g.device)
    count = count.index_add_(0, idx.flatten(), valid.flatten().long()).float()
    tot, nonempty = count.sum().clamp(min=1), count > 0
    if momentum > 0 and acc_sum is not None:
        count = torch.where(nonempty, momentum * acc_sum + (1 - momentum) * count, acc_sum)
        acc_sum.copy_(count)
    return torch.where(valid, tot / (nonempty.sum().clamp(min=1) * count[idx]), 0)


def ghm_c_weights(inputs: Tensor, targets: Tensor, label_weight: Tensor | None = None,
                  bins: int = 30, acc_sum: Tensor | None = None, momentum: float = 0.0) -> Tensor:
    """GHM-C's w of each element: detached, shaped like ``inputs``, float32 (or float64)."""
    x, t = as_float(inputs).detach(), as_float(targets).detach()
    g, valid = (torch.sigmoid(x) - t).abs(), valid_mask(label_weight, x)
    return harmonising_weights(g, valid, bins, GHMC_TOP_EDGE, acc_sum, momentum).to(x.dtype)


def ghm_c_loss(inputs: Tensor, targets: Tensor, label_weight: Tensor | None = None,
               bins: int = 30, acc_sum: Tensor | None = None, momentum: float = 0.0) -> Tensor:
    """GHM-C of logits ``inputs`` (float, e.g. ``(anchors, classes)``) and binary ``targets``;
    ``label_weight`` broadcasts to them. A float32 (or float64) scalar. :class:`GHMC` keeps
    ``acc_sum`` for ``momentum``."""
    check_args(inputs, targets, ("inputs", "targets"), bins=bins, momentum=momentum)
    x = as_float(inputs)
    t, valid = as_float(targets).to(x.dtype).detach(), valid_mask(label_weight, x)
    if _fused.applies():
        lw = None if label_weight is None else valid
        return _fused.ghm_c_loss(x, t, lw, bins, GHMC_TOP_EDGE, acc_sum, momentum)
    w = ghm_c_weights(x, t, label_weight, bins, acc_sum, momentum)
    return (w * binary_cross_entropy(x, t)).sum() / valid.sum().clamp(min=1)


class RunningCounts(nn.Module):
    """The state of GHM with momentum: ``acc_sum`` (float32, ``(bins,)``), the running count of
    each bin, moved in training mode only."""

    acc_sum: Tensor

    def __init__(self, bins: int, momentum: float) -> None:
        super().__init__()
        check_args(bins=bins, momentum=momentum)
        self.bins, self.momentum = bins, momentum
        self.register_buffer("acc_sum", torch.zeros(bins, dtype=torch.float32))

    def reset(self) -> None:
        """Forget the running counts."""
        self.acc_sum.zero_()

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}"


class GHMC(RunningCounts):
    """:func:`ghm_c_loss` with running counts. Defaults: the released config."""

    def __init__(self, bins: int = 30, momentum: float = 0.75) -> None:
        super().__init__(bins, momentum)

    def forward(self, inputs: Tensor, targets: Tensor, label_weight: Tensor | None = None
                ) -> Tensor:
        m = self.momentum if self.training else 0.0
        return ghm_c_loss(inputs, targets, label_weight, self.bins, self.acc_sum, m)
