"""GHM-C and GHM-R written as the authors' released code writes them: a loop over bins.

Slow and plain on purpose: each bin is selected by comparing the gradient norm with
float32 edges, counted, and weighted, in Python, with autograd differentiating the
result, and the cross-entropy is torch's. :mod:`imbalance.losses.ghm` (the same rules,
vectorised) and its fast path :mod:`imbalance.losses._fused` must give the same values
and gradients; the tests check it, and ``benchmarks/losses.py`` times all three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _weights_loop(
    g: Tensor, valid: Tensor, edges: Tensor, acc_sum: Tensor | None, momentum: float
) -> tuple[Tensor, Tensor]:
    weights = torch.zeros_like(g)
    tot = valid.float().sum().clamp(min=1.0)
    n = 0
    for i in range(len(edges) - 1):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        num_in_bin = inds.sum()
        if num_in_bin > 0:
            if momentum > 0:
                assert acc_sum is not None
                acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * num_in_bin
                weights[inds] = tot / acc_sum[i]
            else:
                weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    return weights, tot


def ghm_c_loss_loop(
    inputs: Tensor,
    targets: Tensor,
    label_weight: Tensor | None = None,
    bins: int = 30,
    acc_sum: Tensor | None = None,
    momentum: float = 0.0,
) -> Tensor:
    """GHM-C, loop over bins; ``acc_sum`` (``(bins,)``) is updated in place if momentum > 0."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=inputs.device) / bins
    edges[-1] += 1e-6
    if label_weight is None:
        label_weight = torch.ones_like(inputs)
    valid = (label_weight > 0).expand_as(inputs)
    g = (torch.sigmoid(inputs).detach() - targets).abs().float()
    weights, tot = _weights_loop(g, valid, edges, acc_sum, momentum)
    weights = weights.to(inputs.dtype)
    return F.binary_cross_entropy_with_logits(inputs, targets, weights, reduction="sum") / tot


def ghm_r_loss_loop(
    pred: Tensor,
    target: Tensor,
    label_weight: Tensor | None = None,
    mu: float = 0.02,
    bins: int = 10,
    acc_sum: Tensor | None = None,
    momentum: float = 0.0,
) -> Tensor:
    """GHM-R, loop over bins, with the authors' ``tot = Σ label_weight`` (it cancels)."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=pred.device) / bins
    edges[-1] = 1e3
    if label_weight is None:
        label_weight = torch.ones_like(pred)
    label_weight = label_weight.expand_as(pred)
    valid = label_weight > 0
    d = pred - target
    loss = torch.sqrt(d * d + mu * mu) - mu
    g = (d / torch.sqrt(mu * mu + d * d)).abs().detach().float()
    weights, _ = _weights_loop(g, valid, edges, acc_sum, momentum)
    tot = label_weight.float().sum().clamp(min=1.0)
    # _weights_loop scaled by the valid count; the authors scale by Σ label_weight.
    weights = weights / valid.float().sum().clamp(min=1.0) * tot
    return (loss * weights.to(pred.dtype)).sum() / tot
