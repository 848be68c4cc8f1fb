"""plot_feature_maps and plot_matrix: layout, reduction over channels, shared colour scales."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

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


def pyramid(seed: int, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(1, 4, s, s, generator=g) for s in (16, 8, 4)]


def test_feature_maps_grid_reduces_channels_by_the_l2_norm() -> None:
    before, after = pyramid(0), pyramid(1, scale=3.0)
    axes = plotting.plot_feature_maps({"before": before, "after": after}, ["P2", "P3", "P4"])
    assert axes.shape == (2, 3) and all(isinstance(a, Axes) for a in axes.flat)
    shown = axes[1, 2].images[0].get_array()
    assert shown.shape == (4, 4)
    assert np.allclose(shown, after[2][0].norm(dim=0).numpy(), atol=1e-6)
    assert [a.get_title() for a in axes[0]] == ["P2", "P3", "P4"]
    assert axes[0, 0].get_ylabel() == "before" and axes[1, 0].get_ylabel() == "after"
    # every panel spans the same extent, whatever the map's size
    assert axes[0, 0].images[0].get_extent() == axes[0, 2].images[0].get_extent()


def test_feature_maps_share_one_scale_per_column() -> None:
    before, after = pyramid(0), pyramid(1, scale=3.0)
    axes = plotting.plot_feature_maps({"before": before, "after": after}, share="column")
    for j in range(3):
        top, bottom = axes[0, j].images[0], axes[1, j].images[0]
        assert top.get_clim() == bottom.get_clim()
        hi = max(before[j][0].norm(dim=0).max(), after[j][0].norm(dim=0).max())
        assert top.get_clim()[1] == pytest.approx(float(hi), rel=1e-6)
    assert axes[0, 0].images[0].get_clim() != axes[0, 1].images[0].get_clim()
    # three colour bars, one per column
    assert len(axes[0, 0].figure.axes) == 6 + 3


def test_feature_maps_mean_reduction_row_and_all_scales_and_given_axes() -> None:
    maps = {"a": [np.arange(6.0).reshape(2, 3), np.ones((2, 2, 2))],
            "b": [np.zeros((1, 2, 3, 3)), -np.ones((3, 3))]}
    axes = plotting.plot_feature_maps(maps, reduce="mean", share="row", colorbar=False)
    assert axes[0, 0].images[0].get_clim() == axes[0, 1].images[0].get_clim() == (0.0, 5.0)
    assert axes[1, 1].images[0].get_clim() == (-1.0, 0.0)
    fig, given = plt.subplots(2, 2)
    out = plotting.plot_feature_maps(maps, reduce="mean", share="all", axes=given)
    assert out[1, 1] is given[1, 1]
    assert {im.get_clim() for a in out.flat for im in a.images} == {(-1.0, 5.0)}


def test_feature_maps_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="same number"):
        plotting.plot_feature_maps({"a": [np.ones((2, 2))], "b": []})
    with pytest.raises(ValueError, match="share"):
        plotting.plot_feature_maps({"a": [np.ones((2, 2))]}, share="level")
    with pytest.raises(ValueError, match="reduce"):
        plotting.plot_feature_maps({"a": [np.ones((3, 2, 2))]}, reduce="max")
    with pytest.raises(ValueError, match="feature map"):
        plotting.plot_feature_maps({"a": [np.ones(5)]})
    with pytest.raises(ValueError, match="column titles"):
        plotting.plot_feature_maps({"a": [np.ones((2, 2))]}, ["x", "y"])


def test_matrix_prints_every_cell_and_keeps_the_scale() -> None:
    m = np.array([[1.0, 0.25, -0.5], [0.25, 1.0, 0.0]])
    ax = plotting.plot_matrix(m, ["r0", "r1"], ["c0", "c1", "c2"], vmin=-1, vmax=1,
                              title="corr")
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["1.00", "0.25", "-0.50", "0.25", "1.00", "0.00"])
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0", "c1", "c2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["r0", "r1"]
    assert ax.get_title() == "corr" and len(ax.figure.axes) == 2  # the matrix and its colour bar
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["-0.50"] != colours["1.00"]  # dark and light cells get different text


def test_matrix_square_default_labels_and_shape_check() -> None:
    ax = plotting.plot_matrix(torch.eye(3), ["a", "b", "c"], fmt="{:.0f}", colorbar=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert len(ax.figure.axes) == 1
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_matrix(np.eye(3), ["a", "b"])
