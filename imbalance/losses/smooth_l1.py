"""Smooth L1, the box-regression loss of Fast R-CNN, RetinaNet and Faster R-CNN, and the GHM
paper's authentic smooth L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from imbalance.losses import _fused
from imbalance.losses._elementwise import (
    as_float,
    check_args,
    check_positive,
    check_reduction,
    check_same_shape,
    reduce,
)


def smooth_l1_loss(
    pred: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "none"
) -> Tensor:
    r"""Smooth L1 with transition point β (x = |pred - target|).

    .. math:: \mathrm{SL1}(x) = \begin{cases} 0.5 x^2 / \beta & x < \beta \\
              x - 0.5 \beta & \text{otherwise} \end{cases}

    Its gradient is ``x / β`` inside and a constant 1 outside: every error larger than β
    pushes equally hard. ``beta = 0`` is the L1 loss. Computed by
    :func:`torch.nn.functional.smooth_l1_loss`.

    Args:
        pred, target: float tensors of the same shape, e.g. ``(num_pos, 4)`` box deltas.
        beta: transition point, >= 0 (RetinaNet uses 0.11, Faster R-CNN 1/9 or 1).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """
    check_reduction(reduction)
    check_same_shape(pred, target, ("pred", "target"))
    check_positive(beta, "beta", allow_zero=True)
    loss = F.smooth_l1_loss(as_float(pred), as_float(target), reduction="none", beta=beta)
    return reduce(loss, reduction)


def asl1_loss(pred: Tensor, target: Tensor, mu: float = 0.02, reduction: str = "none") -> Tensor:
    """Authentic smooth L1 ``sqrt(d² + μ²) - μ`` of d = pred - target (float, one shape),
    computed as ``d² / (sqrt(d² + μ²) + μ)``, which does not cancel for ``|d| ≪ μ``."""
    check_args(pred, target, ("pred", "target"), reduction=reduction, mu=mu)
    d = as_float(pred) - as_float(target)
    if _fused.applies():
        return _fused.asl1_loss(d, mu, reduction)
    return reduce(d * d / (torch.sqrt(d * d + mu * mu) + mu), reduction)
