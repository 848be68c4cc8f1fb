"""Sigmoid cross-entropy, one-vs-all per class as in RetinaNet, and its α-balanced form.

Both are exact at both ends of the logit range: the cross-entropy is written as two
softplus terms, neither of which cancels (see :func:`binary_cross_entropy`). When only the
logits need a gradient, :mod:`imbalance.losses._fused` computes the same values faster.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from imbalance.losses import _fused
from imbalance.losses._elementwise import as_float, check_args, reduce


def alpha_t(targets: Tensor, alpha: float) -> Tensor:
    r""":math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`: α for positives, 1 − α for negatives."""
    return alpha * targets + (1 - alpha) * (1 - targets)


def binary_cross_entropy(inputs: Tensor, targets: Tensor, reduction: str = "none") -> Tensor:
    r"""Sigmoid binary cross-entropy on logits, one binary problem per class.

    .. math:: \mathrm{CE}(x, y) = -y \log \sigma(x) - (1 - y) \log(1 - \sigma(x))
              = y \log(1 + e^{-x}) + (1 - y) \log(1 + e^{x})

    The second form is the code: each softplus is exact, so the loss keeps its relative
    precision for easy positives (x ≫ 0, y = 1) and easy negatives (x ≪ 0, y = 0) alike.
    torch's ``binary_cross_entropy_with_logits`` computes ``(1 - y) x - log σ(x)``, which
    cancels for easy negatives: in float32 it returns 0 below x ≈ -16.

    Args:
        inputs: logits, float tensor of any shape, e.g. ``(num_anchors, num_classes)``.
        targets: float tensor of the same shape, 1 for the positive class and 0 otherwise
            (soft targets in [0, 1] are allowed). Boolean or integer targets are cast.
        reduction: ``"none"`` (element-wise, same shape as ``inputs``), ``"mean"`` or
            ``"sum"``.

    Returns:
        float32 (float64 for float64 inputs) loss; a scalar unless ``reduction="none"``.
    """
    check_args(inputs, targets, reduction=reduction)
    x = as_float(inputs)
    t = as_float(targets).to(x.dtype)
    if _fused.applies(t):
        return _fused.sigmoid_focal_loss(x, t, alpha=-1.0, gamma=0.0, reduction=reduction)
    loss = t * F.softplus(-x) + (1 - t) * F.softplus(x)
    return reduce(loss, reduction)


def alpha_balanced_bce(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, reduction: str = "none"
) -> Tensor:
    r"""α-balanced sigmoid cross-entropy (Focal Loss paper, Eq. 3).

    .. math:: \mathrm{CE}_\alpha = \alpha_t \, \mathrm{CE}, \qquad
              \alpha_t = \alpha y + (1 - \alpha)(1 - y)

    ``alpha`` weighs positives and ``1 - alpha`` negatives; ``alpha < 0`` disables the
    weighting (plain cross-entropy), as in :func:`sigmoid_focal_loss`. Equal to
    ``sigmoid_focal_loss(..., gamma=0)``.

    Args:
        inputs: logits, float tensor of any shape.
        targets: float tensor of the same shape (binary, or soft in [0, 1]).
        alpha: weight of the positive class in [0, 1], or negative for none.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        float32 (float64 for float64 inputs) loss; a scalar unless ``reduction="none"``.
    """
    check_args(inputs, targets, reduction=reduction, alpha=alpha)
    x = as_float(inputs)
    t = as_float(targets).to(x.dtype)
    if _fused.applies(t):
        return _fused.sigmoid_focal_loss(x, t, alpha=alpha, gamma=0.0, reduction=reduction)
    loss = binary_cross_entropy(x, t)
    if alpha >= 0:
        loss = alpha_t(t, alpha) * loss
    return reduce(loss, reduction)
