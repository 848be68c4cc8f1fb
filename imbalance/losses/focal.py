"""Sigmoid focal loss (Lin et al., *Focal Loss for Dense Object Detection*)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from imbalance.losses._elementwise import as_float, check_reduction, check_same_shape, reduce


def _focal_terms(x: Tensor, t: Tensor, alpha: float, gamma: float) -> tuple[Tensor, ...]:
    """The pieces of the focal loss: p, the cross-entropy, q = 1 - p_t and the modulator."""
    p = torch.sigmoid(x)
    ce = torch.addcmul(x, t, x, value=-1).sub_(F.logsigmoid(x))  # (1 - t) x - log σ(x)
    q = torch.lerp(p, 1 - p, t)  # 1 - p_t = p (1 - t) + (1 - p) t
    if gamma == 0:
        mod = None
    elif gamma == 2:
        mod = q * q
    else:
        mod = q.pow(gamma)
    return p, ce, q, mod


def _alpha_t(t: Tensor, alpha: float) -> Tensor:
    return t * (2 * alpha - 1) + (1 - alpha)  # α t + (1 - α)(1 - t)


def _mul_alpha_t_(v: Tensor, t: Tensor, alpha: float) -> Tensor:
    """``v *= α_t`` in place, without allocating α_t."""
    if alpha == 1:
        return v.mul_(t)
    # (1 - α) v (1 + c t) = v (α t + (1 - α)(1 - t)) with c = (2α - 1) / (1 - α)
    v.mul_(1 - alpha)
    return v.addcmul_(v, t, value=(2 * alpha - 1) / (1 - alpha))


def _focal_forward(
    x: Tensor, t: Tensor, alpha: float, gamma: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Element-wise focal loss and, if asked, its closed-form gradient with respect to x.

    With p = σ(x), q = 1 - p_t = p + t - 2pt and CE = log(1 + e^x) - t x (exact for the
    negatives that dominate a detector's anchors; torch's (1 - t) x - log σ(x) is exact
    for the positives instead, and the two agree to float rounding):

        ∂FL/∂x = α_t [ (p - t) q^γ + γ q^(γ-1) CE · p (1 - p)(1 - 2t) ].

    Written with as few fresh tensors as possible (every out-of-place operation on a large
    CPU tensor pays for new pages), the rest in place.
    """
    p = torch.sigmoid(x)
    ce = F.softplus(x).addcmul_(t, x, value=-1)  # log(1 + e^x) - t x
    grad = None
    if gamma == 0:
        if need_grad:
            grad = p.sub_(t)
    else:
        q = torch.add(p, t).addcmul_(p, t, value=-2)  # 1 - p_t
        if need_grad:
            dq = torch.addcmul(p, p, p, value=-1)  # p (1 - p)
            dq.addcmul_(dq, t, value=-2).mul_(ce)  # CE · ∂q/∂x = CE · p (1 - p)(1 - 2t)
            if gamma == 2:
                dq.mul_(q).mul_(2)  # γ q^(γ-1) CE ∂q/∂x
                q.square_()
            else:
                qg = q.pow(gamma - 1)
                if gamma < 1:  # q^(γ-1) is infinite at q = 0, where CE ∂q/∂x = 0
                    qg.masked_fill_(q == 0, 0)
                dq.mul_(qg).mul_(gamma)
                q = qg.mul_(q)
            grad = p.sub_(t).mul_(q).add_(dq)
        else:
            q = q.square_() if gamma == 2 else q.pow_(gamma)
        ce.mul_(q)
    if alpha >= 0:
        _mul_alpha_t_(ce, t, alpha)
        if grad is not None:
            _mul_alpha_t_(grad, t, alpha)
    return ce, grad


class _SigmoidFocalLoss(torch.autograd.Function):
    """Element-wise focal loss whose backward is the closed form, computed in the forward.

    The backward is then a single multiplication, instead of autograd replaying every
    operation of the forward (see :func:`_focal_forward` for the formula).
    """

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:  # type: ignore[override]
        loss, grad = _focal_forward(x, t, alpha, gamma, need_grad=True)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None


def sigmoid_focal_loss_reference(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Element-wise focal loss written with plain autograd operations.

    The same values as :func:`sigmoid_focal_loss` with ``reduction="none"``; autograd
    differentiates it, including with respect to ``targets``. Used when targets need a
    gradient, and in the tests as the reference for the closed-form backward.
    """
    _, ce, _, mod = _focal_terms(inputs, targets, alpha, gamma)
    loss = ce if mod is None else ce * mod
    if alpha >= 0:
        loss = loss * _alpha_t(targets, alpha)
    return loss


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    r"""Sigmoid focal loss, with the signature and values of torchvision's.

    .. math:: \mathrm{FL}(p_t) = -\alpha_t (1 - p_t)^\gamma \log p_t, \qquad
              p_t = p y + (1 - p)(1 - y), \quad p = \sigma(x)

    with :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`; ``alpha < 0`` drops
    :math:`\alpha_t`. :math:`-\log p_t` is the cross-entropy, computed stably from the
    logits. ``gamma = 0`` gives :func:`alpha_balanced_bce`; ``gamma = 0, alpha < 0`` gives
    :func:`binary_cross_entropy`.

    The backward pass is the closed form (see ``_SigmoidFocalLoss``), which makes forward
    plus backward about twice as fast as differentiating the formula above with autograd
    (``benchmarks/losses.py``). Half-precision logits are upcast to float32.

    Args:
        inputs: logits, float tensor of any shape, e.g. ``(num_anchors, num_classes)``.
        targets: float tensor of the same shape: 1 for the positive class, 0 for the others.
        alpha: weight of positives in [0, 1], or negative to disable. Default 0.25.
        gamma: focusing parameter, >= 0. Default 2.
        reduction: ``"none"`` (same shape as ``inputs``), ``"mean"`` or ``"sum"``.

    Returns:
        float32 (or float64) loss; a scalar unless ``reduction="none"``.
    """
    check_reduction(reduction)
    check_same_shape(inputs, targets, ("inputs", "targets"))
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable), got {alpha}")
    x = as_float(inputs)
    t = as_float(targets).to(x.dtype)
    if torch.is_grad_enabled() and t.requires_grad:
        loss = sigmoid_focal_loss_reference(x, t, alpha, gamma)
    elif torch.is_grad_enabled() and x.requires_grad:
        loss = _SigmoidFocalLoss.apply(x, t, float(alpha), float(gamma))
    else:
        loss, _ = _focal_forward(x.detach(), t, alpha, gamma, need_grad=False)
    return reduce(loss, reduction)
