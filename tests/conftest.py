"""Shared fixtures: one tiny synthetic dataset per test session (per xdist worker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from imbalance.data.synthetic import make_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: `-n auto` already runs one worker per core, and
    # oversubscribed threads make the training tests several times slower.
    torch.set_num_threads(1)

TINY_OUTLIER_FRACTION = 0.25


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset with a quarter of the train annotations made outliers (val has none)."""
    out = tmp_path_factory.mktemp("tiny")
    return make_dataset(out, "tiny", seed=0, progress=False,
                        outlier_fraction=TINY_OUTLIER_FRACTION)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test (restored after): tiny tensors run faster on one, and
    far faster on a loaded shared machine. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
