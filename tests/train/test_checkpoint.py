"""Atomic checkpoints, the generators' states, and the learning rate schedule."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from imbalance.train.checkpoint import load_checkpoint, save_checkpoint
from imbalance.train.schedule import WarmupMultiStep, lr_scheduler
from imbalance.train.seeding import capture_rng_state, derive_seed, restore_rng_state


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"step": 1, "w": torch.arange(3)}, path)
    assert load_checkpoint(path)["step"] == 1

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_the_generators_states_come_back():
    state = capture_rng_state()
    drawn = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    restore_rng_state(state)
    again = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def test_derived_seeds_differ_for_nearby_keys():
    seeds = {derive_seed(0, epoch, index) for epoch in range(3) for index in range(100)}
    assert len(seeds) == 300
    assert derive_seed(1, 2) == derive_seed(1, 2) and 0 <= derive_seed(1, 2) < 2**63


def test_warmup_then_steps_at_the_milestones():
    factor = WarmupMultiStep(total=100, warmup_iters=10, warmup_factor=0.1,
                             milestones=[0.5, 0.75], gamma=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == factor(49) == 1.0
    assert factor(50) == pytest.approx(0.1) and factor(75) == pytest.approx(0.01)
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=0.2)
    scheduler = lr_scheduler(optimizer, 100, 10, 0.1, [0.5], 0.1)
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.02) and lrs[20] == pytest.approx(0.2)
    assert lrs[55] == pytest.approx(0.02)
