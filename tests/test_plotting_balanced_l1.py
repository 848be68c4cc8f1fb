"""plot_shares: stacked bars of how a total splits into groups (the Balanced L1 chapter)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from imbalance import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def no_show_and_close(monkeypatch: pytest.MonkeyPatch):
    def fail(*_, **__):
        raise AssertionError("plotting must not call plt.show()")

    monkeypatch.setattr(plt, "show", fail)
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before
    plt.close("all")


def bars(ax: Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_plot_shares_stacks_each_row_in_group_order() -> None:
    shares = {"smooth L1": {"inliers": 0.3, "outliers": 0.7},
              "Balanced L1": {"inliers": 0.6, "outliers": 0.4}}
    ax = plotting.plot_shares(shares, title="gradient", legend_title="group")
    assert isinstance(ax, Axes)
    rects = bars(ax)
    assert len(rects) == 4
    # groups are drawn in order: first every row's inliers, then the outliers stacked on them
    lefts = [r.get_x() for r in rects]
    widths = [r.get_width() for r in rects]
    assert np.allclose(widths, [0.3, 0.6, 0.7, 0.4])
    assert np.allclose(lefts, [0.0, 0.0, 0.3, 0.6])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["smooth L1", "Balanced L1"]
    assert ax.yaxis_inverted()  # the first row on top
    assert sorted(t.get_text() for t in ax.texts) == ["30%", "40%", "60%", "70%"]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["inliers", "outliers"]
    assert legend.get_title().get_text() == "group"
    assert ax.get_title() == "gradient"


def test_plot_shares_missing_group_is_zero_and_small_segments_unlabelled() -> None:
    fig, ax = plt.subplots()
    out = plotting.plot_shares({"a": {"x": 0.98, "y": 0.02}, "b": {"x": 1.0}}, ax=ax)
    assert out is ax
    widths = sorted(r.get_width() for r in bars(ax))
    assert np.allclose(widths, [0.0, 0.02, 0.98, 1.0])
    assert sorted(t.get_text() for t in ax.texts) == ["100%", "98%"]


def test_plot_shares_rejects_negative_shares() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        plotting.plot_shares({"a": {"x": -0.1, "y": 1.1}})
