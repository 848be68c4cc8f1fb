"""The learning rate schedule: linear warm-up, then steps down by ``gamma`` at milestones."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


class WarmupMultiStep:
    """The factor of the base learning rate at step ``s`` (0-based, the step about to be taken).

    ``warmup_factor`` at step 0 rising linearly to 1 at ``warmup_iters``, times ``gamma`` for
    each milestone passed; ``milestones`` are fractions of ``total`` steps.
    """

    def __init__(self, total: int, warmup_iters: int, warmup_factor: float,
                 milestones: Sequence[float], gamma: float) -> None:
        self.total = total
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.steps = sorted(round(f * total) for f in milestones)
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        factor = self.gamma ** bisect.bisect_right(self.steps, step)
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def lr_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup_iters: int,
                 warmup_factor: float, milestones: Sequence[float],
                 gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :class:`WarmupMultiStep` once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStep(total, warmup_iters, warmup_factor, milestones, gamma))
