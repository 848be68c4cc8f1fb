"""Sigmoid cross-entropy, one-vs-all per class as in RetinaNet, and its α-balanced form."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from imbalance.losses._elementwise import as_float, check_reduction, check_same_shape, reduce


def binary_cross_entropy(inputs: Tensor, targets: Tensor, reduction: str = "none") -> Tensor:
    r"""Sigmoid binary cross-entropy on logits, one binary problem per class.

    .. math:: \mathrm{CE}(x, y) = -y \log \sigma(x) - (1 - y) \log(1 - \sigma(x))

    computed stably by :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Args:
        inputs: logits, float tensor of any shape, e.g. ``(num_anchors, num_classes)``.
        targets: float tensor of the same shape, 1 for the positive class and 0 otherwise
            (soft targets in [0, 1] are allowed). Boolean or integer targets are cast.
        reduction: ``"none"`` (element-wise, same shape as ``inputs``), ``"mean"`` or
            ``"sum"``.

    Returns:
        float32 (or float64) loss; a scalar unless ``reduction="none"``.
    """
    check_reduction(reduction)
    check_same_shape(inputs, targets, ("inputs", "targets"))
    x = as_float(inputs)
    loss = F.binary_cross_entropy_with_logits(x, as_float(targets).to(x.dtype), reduction="none")
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
    """
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable), got {alpha}")
    loss = binary_cross_entropy(inputs, targets, reduction="none")
    if alpha >= 0:
        t = as_float(targets).to(loss.dtype)
        loss = loss * (t * (2 * alpha - 1) + (1 - alpha))
    return reduce(loss, reduction)
