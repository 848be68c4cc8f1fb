"""Argument checks and reductions shared by the element-wise losses.

Every check here reads tensor metadata only (shapes, dtypes), never values, so none of
them forces a device synchronisation. Value checks (targets outside [0, 1], non-finite
logits) belong to the data pipeline and to the training loop's non-finite-loss guard.
"""

from __future__ import annotations

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


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless a hyper-parameter is positive (or zero, if allowed)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


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
