"""Argument checks and reductions shared by the element-wise losses.

Every check here reads tensor metadata only (shapes, dtypes) or Python numbers, never
tensor values, so none of them forces a device synchronisation. Value checks (targets
outside [0, 1], non-finite logits) belong to the data pipeline and to the training loop's
non-finite-loss guard.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is ``"none"``, ``"mean"`` or ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_same_shape(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` if two tensors that are compared element-wise differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_finite(value: float, name: str) -> None:
    """Raise ``ValueError`` unless a hyper-parameter is a finite real number (a NaN passes every
    comparison, so it is refused first)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless a hyper-parameter is positive (or zero, if allowed)."""
    check_finite(value, name)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


def check_alpha(alpha: float) -> None:
    """α weighs the positives: in [0, 1], or negative to switch the weighting off."""
    check_finite(alpha, "alpha")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable), got {alpha}")


def check_gamma(gamma: float) -> None:
    """The focusing parameter γ of the focal loss must be >= 0."""
    check_finite(gamma, "gamma")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def check_bins(bins: int) -> None:
    """GHM's number of gradient-norm bins must be a positive integer."""
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def check_momentum(momentum: float) -> None:
    """GHM's momentum ``m`` of the running bin counts must be in [0, 1)."""
    check_finite(momentum, "momentum")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")


def check_args(
    a: Tensor | None = None,
    b: Tensor | None = None,
    names: tuple[str, str] = ("inputs", "targets"),
    *,
    reduction: str | None = None,
    alpha: float | None = None,
    gamma: float | None = None,
    bins: int | None = None,
    mu: float | None = None,
    momentum: float | None = None,
) -> None:
    """The checks of one loss call: ``a`` and ``b`` of one shape, and each argument given."""
    if a is not None and b is not None:
        check_same_shape(a, b, names)
    if reduction is not None:
        check_reduction(reduction)
    if alpha is not None:
        check_alpha(alpha)
    if gamma is not None:
        check_gamma(gamma)
    if bins is not None:
        check_bins(bins)
    if mu is not None:
        check_positive(mu, "mu")
    if momentum is not None:
        check_momentum(momentum)


def valid_mask(label_weight: Tensor | None, like: Tensor) -> Tensor:
    """GHM's valid elements, ``label_weight > 0`` (all when ``None``), shaped like ``like``.

    Only the sign of ``label_weight`` matters, as in the authors' code. Raises
    ``ValueError`` if ``label_weight`` does not broadcast to ``like``. Returns a bool tensor
    (an expanded view when ``label_weight`` is smaller than ``like``).
    """
    if label_weight is None:
        return torch.ones((), dtype=torch.bool, device=like.device).expand_as(like)
    if label_weight.device != like.device:
        raise ValueError(f"label_weight is on {label_weight.device}, the loss's inputs on "
                         f"{like.device}; move it there")
    try:
        torch.broadcast_shapes(label_weight.shape, like.shape)
    except RuntimeError:
        raise ValueError(
            f"label_weight of shape {tuple(label_weight.shape)} does not broadcast to "
            f"{tuple(like.shape)}"
        ) from None
    return (label_weight > 0).expand_as(like)


def as_float(x: Tensor) -> Tensor:
    """Compute losses in float32 at least: half and bfloat16 inputs are upcast.

    Under autocast the logits of a detector head arrive in float16 or bfloat16; the
    logarithms and the small differences inside the losses need float32. The cast is
    differentiable, so gradients flow back in the input's dtype. Integer and boolean
    targets become float32 as well.
    """
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to an element-wise loss.

    ``"mean"`` of an empty tensor is ``0`` (with a zero gradient), not ``NaN`` as in
    torch, so that an image without anchors cannot poison a batch.
    """
    check_reduction(reduction)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(loss.numel(), 1)
