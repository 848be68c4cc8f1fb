"""Balanced L1 loss (Pang et al., *Libra R-CNN*, CVPR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from imbalance.losses._elementwise import (
    as_float,
    check_positive,
    check_reduction,
    check_same_shape,
    reduce,
)

#: The largest γ/α Balanced L1 takes: b = e^(γ/α) - 1 then stays below 1e26, so ``b x`` and the
#: loss stay finite in float32 (the paper's α = 0.5, γ = 1.5 give γ/α = 3).
MAX_GAMMA_OVER_ALPHA = 60.0


def balanced_l1_b(alpha: float = 0.5, gamma: float = 1.5) -> float:
    r"""The constant b of Balanced L1, from :math:`\alpha \ln(b + 1) = \gamma`: ``e^(γ/α) - 1``.

    Raises ``ValueError`` for α, γ that are not positive and finite, or with γ/α above
    :data:`MAX_GAMMA_OVER_ALPHA` (b would overflow float32's range inside the loss).
    """
    check_positive(alpha, "alpha")
    check_positive(gamma, "gamma")
    if gamma / alpha > MAX_GAMMA_OVER_ALPHA:
        least = gamma / MAX_GAMMA_OVER_ALPHA
        raise ValueError(f"gamma / alpha = {gamma / alpha:.4g} is too large: b = e^(gamma/alpha)"
                         f" - 1 overflows the loss; Balanced L1 takes gamma / alpha <= "
                         f"{MAX_GAMMA_OVER_ALPHA:g} (alpha >= {least:.3g} for gamma = {gamma:g})")
    return math.exp(gamma / alpha) - 1


def balanced_l1_loss(
    pred: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    gamma: float = 1.5,
    beta: float = 1.0,
    reduction: str = "none",
) -> Tensor:
    r"""Balanced L1 loss, element-wise on x = |pred - target|.

    .. math:: L_b(x) = \begin{cases}
              \frac{\alpha}{b} (b x + 1) \ln\!\left(\frac{b x}{\beta} + 1\right) - \alpha x
              & x < \beta \\
              \gamma x + \frac{\gamma}{b} - \alpha \beta & \text{otherwise}
              \end{cases}
              \qquad \alpha \ln(b + 1) = \gamma

    At ``beta = 1`` (the paper, Eq. 8–9) the gradient is :math:`\alpha \ln(b x + 1)` for
    ``x < 1`` and γ beyond, continuous at ``x = 1``: inliers (small errors) get a larger
    gradient than under smooth L1, outliers a bounded one. For ``beta != 1`` this follows
    the authors' released generalisation, which is *not* a rescaled paper loss: the value
    is continuous at β but the slope is not. Just below β it is
    :math:`\gamma + \alpha \left(\frac{b\beta + 1}{\beta (b + 1)} - 1\right)`, then γ
    above (at the Libra RetinaNet setting β = 0.11: 1.701, then 1.5), and it starts at
    :math:`\alpha (1/\beta - 1)` rather than 0 at ``x = 0+``.

    Args:
        pred, target: float tensors of the same shape, e.g. ``(num_pos, 4)`` box deltas.
        alpha: weight of the inlier gradient (> 0). Default 0.5.
        gamma: bound of the outlier gradient (> 0). Default 1.5.
        beta: transition point (> 0). Default 1.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """
    check_reduction(reduction)
    check_same_shape(pred, target, ("pred", "target"))
    check_positive(alpha, "alpha")
    check_positive(gamma, "gamma")
    check_positive(beta, "beta")
    b = balanced_l1_b(alpha, gamma)
    x = (as_float(pred) - as_float(target)).abs()
    inside = alpha / b * (b * x + 1) * torch.log1p(b * x / beta) - alpha * x
    outside = gamma * x + (gamma / b - alpha * beta)
    return reduce(torch.where(x < beta, inside, outside), reduction)
