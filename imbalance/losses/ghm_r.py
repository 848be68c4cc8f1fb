"""GHM-R (Li, Liu and Wang, AAAI 2019): the gradient harmonizing mechanism of :mod:`.ghm` on the
authentic smooth L1 of box regression, with gr = ``|d| / sqrt(d² + μ²)``, d = pred - target, in
place of GHM-C's g, and the top bin edge at ``1e3``. Element-wise: a box is four elements."""

from __future__ import annotations

import torch
from torch import Tensor

from imbalance.losses import _fused
from imbalance.losses._elementwise import as_float, check_args, valid_mask
from imbalance.losses.ghm import RunningCounts, harmonising_weights
from imbalance.losses.smooth_l1 import asl1_loss

GHMR_TOP_EDGE = 1e3


def ghm_r_gradient_norm(d: Tensor, mu: float) -> Tensor:
    """gr = ``|d| / sqrt(d² + μ²)`` of the errors ``d`` (the gradient of ASL1), in [0, 1)."""
    return (d / torch.sqrt(d * d + mu * mu)).abs()


def ghm_r_loss(pred: Tensor, target: Tensor, label_weight: Tensor | None = None, mu: float = 0.02,
               bins: int = 10, acc_sum: Tensor | None = None, momentum: float = 0.0) -> Tensor:
    """GHM-R, element-wise over ``pred`` and ``target`` (float, e.g. ``(anchors, 4)``);
    ``label_weight > 0`` marks the positives. A float32 (or float64) scalar."""
    check_args(pred, target, ("pred", "target"), bins=bins, mu=mu, momentum=momentum)
    d = as_float(pred) - as_float(target)  # the gradient flows on to pred and target
    valid = valid_mask(label_weight, d)
    if _fused.applies():
        lw = None if label_weight is None else valid
        return _fused.ghm_r_loss(d, lw, mu, bins, GHMR_TOP_EDGE, acc_sum, momentum)
    g = ghm_r_gradient_norm(d.detach(), mu)
    w = harmonising_weights(g, valid, bins, GHMR_TOP_EDGE, acc_sum, momentum).to(d.dtype)
    return (w * asl1_loss(d, torch.zeros_like(d), mu)).sum() / valid.sum().clamp(min=1)


class GHMR(RunningCounts):
    """:func:`ghm_r_loss` with running counts. Defaults: the released config."""

    def __init__(self, mu: float = 0.02, bins: int = 10, momentum: float = 0.7) -> None:
        super().__init__(bins, momentum)
        check_args(mu=mu)
        self.mu = mu

    def forward(self, pred: Tensor, target: Tensor, label_weight: Tensor | None = None) -> Tensor:
        m = self.momentum if self.training else 0.0
        return ghm_r_loss(pred, target, label_weight, self.mu, self.bins, self.acc_sum, m)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, " + super().extra_repr()
