"""Fixtures of the training tests: smoke configurations made fast enough for CI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imbalance.train import TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fast(root: Path) -> list[str]:
    """Overrides that make a smoke run take seconds: 96 px, a narrow FPN, 2 images a step from
    a fixed pair, one CPU thread, every step logged, no progress bar."""
    return [f"data.root={root}", "data.min_size=96", "data.max_size=96", "data.batch_size=2",
            "data.max_train_images=2", "data.max_val_images=4", "model.fpn_channels=32",
            "optim.iterations=15", "optim.warmup_iters=3", "run.log_every=1",
            "run.checkpoint_every=0", "run.device=cpu", "run.threads=1", "run.progress=false"]


@pytest.fixture(scope="session")
def smoke_config(tiny_root: Path) -> Callable[..., TrainConfig]:
    """``make(*overrides, config="retinanet_focal_smoke.yaml")``: a smoke configuration from
    ``configs/`` on the session's tiny dataset, with :func:`fast` and then ``overrides``."""
    def make(*overrides: str, config: str = "retinanet_focal_smoke.yaml") -> TrainConfig:
        return load_config(CONFIGS / config, [*fast(tiny_root), *overrides])

    return make

