"""Shared fixtures: one tiny synthetic dataset per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbalance.data.synthetic import make_dataset

TINY_OUTLIER_FRACTION = 0.25


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset with a quarter of the train annotations made outliers (val has none)."""
    out = tmp_path_factory.mktemp("tiny")
    return make_dataset(out, "tiny", seed=0, progress=False,
                        outlier_fraction=TINY_OUTLIER_FRACTION)
