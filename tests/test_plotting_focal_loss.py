"""The cumulative-share curve and plot (the Focal Loss chapter's Fig. 4)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from imbalance import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_and_keep_rcparams():
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before
    plt.close("all")


def test_cumulative_share_sorts_ascending_and_normalises() -> None:
    x, y = plotting.cumulative_share(np.array([3.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(y, [0, 0, 0, 0.25, 1.0])


def test_cumulative_share_takes_tensors_thins_and_stays_exact_at_its_points() -> None:
    v = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    x, y = plotting.cumulative_share(v, max_points=101)
    assert len(x) == len(y) == 101 and x[0] == y[0] == 0 and x[-1] == y[-1] == 1
    full = np.concatenate([[0], np.cumsum(np.sort(v.numpy().astype(np.float64)))])
    np.testing.assert_allclose(y, full[(x * v.numel()).round().astype(int)] / full[-1])
    assert np.all(np.diff(y) >= 0) and np.all(np.diff(x) > 0)


def test_cumulative_share_edge_cases() -> None:
    x, y = plotting.cumulative_share(np.zeros(4))  # no mass: the diagonal
    np.testing.assert_allclose(y, x)
    with pytest.raises(ValueError, match="non-negative"):
        plotting.cumulative_share(np.array([-1.0, 2.0]))


def test_plot_cumulative_share_draws_one_line_per_series() -> None:
    values = {"γ = 0": np.arange(10.0), "γ = 2": np.arange(10.0) ** 4}
    ax = plotting.plot_cumulative_share(values, xlabel="fraction", title="t")
    lines = ax.get_lines()
    assert len(lines) == 2 and ax.get_legend() is not None
    assert ax.get_xlabel() == "fraction" and ax.get_title() == "t"
    x, y = lines[1].get_data()
    assert x[-1] == 1 and y[-1] == 1 and y[5] < lines[0].get_data()[1][5]  # more concentrated
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
