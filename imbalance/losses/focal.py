r"""Sigmoid focal loss (Lin, Goyal, Girshick, He and Dollár, *Focal Loss for Dense Object
Detection*, ICCV 2017).

The cross-entropy of each one-vs-all problem is scaled down by how well it is already
solved: with :math:`p = \sigma(x)` and :math:`p_t` the probability of the true class,

.. math:: \mathrm{FL}(p_t) = -\alpha_t (1 - p_t)^\gamma \log p_t .

Below, the equation is the code. Two details keep it exact at both ends of the logit
range: :math:`1 - p = \sigma(-x)` is its own sigmoid (``1 - torch.sigmoid(x)`` rounds to 0
for x > 17), and :math:`-\log p_t` is :func:`binary_cross_entropy`, two softplus terms
that never cancel. When only the logits need a gradient (a training step),
:mod:`imbalance.losses._fused` computes the same values with a closed-form backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from imbalance.losses import _fused
from imbalance.losses._elementwise import as_float, check_args, reduce
from imbalance.losses.cross_entropy import alpha_t, binary_cross_entropy


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    r"""Sigmoid focal loss, with the signature of torchvision's (and exact values).

    .. math:: \mathrm{FL} = \alpha_t (1 - p_t)^\gamma \, \mathrm{CE}, \qquad
              1 - p_t = p (1 - y) + (1 - p) y, \quad p = \sigma(x)

    with :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`; ``alpha < 0`` drops
    :math:`\alpha_t`. ``gamma = 0`` gives :func:`alpha_balanced_bce`; ``gamma = 0,
    alpha < 0`` gives :func:`binary_cross_entropy`. Half-precision logits are upcast to
    float32.

    Args:
        inputs: logits, float tensor of any shape, e.g. ``(num_anchors, num_classes)``.
        targets: float tensor of the same shape: 1 for the positive class, 0 for the others
            (soft targets in [0, 1] are allowed).
        alpha: weight of positives in [0, 1], or negative to disable. Default 0.25.
        gamma: focusing parameter, >= 0. Default 2.
        reduction: ``"none"`` (same shape as ``inputs``), ``"mean"`` or ``"sum"``.

    Returns:
        float32 (float64 for float64 inputs) loss; a scalar unless ``reduction="none"``.
    """
    check_args(inputs, targets, reduction=reduction, alpha=alpha, gamma=gamma)
    x = as_float(inputs)
    t = as_float(targets).to(x.dtype)
    if _fused.applies(t):
        return _fused.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    p, one_minus_p = torch.sigmoid(x), torch.sigmoid(-x)
    ce = binary_cross_entropy(x, t)  # -log p_t
    q = p * (1 - t) + one_minus_p * t  # 1 - p_t
    # clamped: q underflows to 0 for |x| > ~88, where q**γ (γ < 1) has an infinite derivative
    loss = q.clamp_min(torch.finfo(q.dtype).tiny) ** gamma * ce
    if alpha >= 0:
        loss = alpha_t(t, alpha) * loss
    return reduce(loss, reduction)
