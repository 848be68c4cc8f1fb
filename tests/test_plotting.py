"""Plots: each returns its Axes, draws what it was given, never shows, leaves rcParams alone."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle, StepPatch  # noqa: E402

from imbalance import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def no_show_and_close(monkeypatch: pytest.MonkeyPatch):
    def fail(*_, **__):
        raise AssertionError("plotting must not call plt.show()")

    monkeypatch.setattr(plt, "show", fail)
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before  # the style never leaks
    plt.close("all")


def boxes_on(ax: Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_show_detections_draws_each_box_once() -> None:
    image = torch.rand(3, 64, 80)
    boxes = torch.tensor([[5.0, 5.0, 30.0, 20.0], [40.0, 10.0, 70.0, 60.0], [1, 1, 3, 3]])
    labels = torch.tensor([1, 2, 1])
    scores = torch.tensor([0.9, 0.6, 0.1])
    gt = np.array([[6.0, 5.0, 31.0, 21.0]])
    ax = plotting.show_detections(image, boxes, labels, ["bg", "circle", "square"], scores,
                                  gt_boxes=gt, gt_labels=[1], score_threshold=0.5)
    assert isinstance(ax, Axes) and isinstance(ax.figure, plt.Figure)
    rects = boxes_on(ax)
    assert len(rects) == 2 + 1  # two predictions above the threshold and the ground truth
    assert sorted(t.get_text() for t in ax.texts) == ["circle 0.90", "square 0.60"]
    assert [r.get_linestyle() for r in rects].count("--") == 1
    assert ax.images[0].get_array().shape == (64, 80, 3)
    dashed = next(r for r in rects if r.get_linestyle() == "--")
    assert (dashed.get_x(), dashed.get_y(), dashed.get_width(), dashed.get_height()) == (
        6.0, 5.0, 25.0, 16.0)


def test_show_detections_into_given_axes_with_uint8_images() -> None:
    fig, axes = plt.subplots(1, 2)
    image = np.zeros((32, 32, 3), np.uint8)
    ax = plotting.show_detections(image, np.zeros((0, 4)), [], {1: "a"}, ax=axes[1])
    assert ax is axes[1] and not boxes_on(ax)


def test_plot_curves_draws_one_line_per_curve() -> None:
    x = np.linspace(0, 1, 50)
    curves = {f"γ = {g}": -(1 - x) ** g * np.log(np.clip(x, 1e-6, 1)) for g in (0, 1, 2, 5)}
    ax = plotting.plot_curves(x, curves, "p_t", "loss", title="focal", logy=True)
    lines = [c for c in ax.get_children() if isinstance(c, Line2D) and c.get_label() in curves]
    assert len(lines) == 4
    assert np.allclose(lines[2].get_ydata(), curves["γ = 2"])
    assert ax.get_yscale() == "log" and ax.get_title() == "focal"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    assert len({line.get_color() for line in lines}) == 4


def test_plot_histogram_from_values_counts_and_several_series() -> None:
    values = np.random.default_rng(0).random(1000)
    ax = plotting.plot_histogram(values, bins=10, xlabel="gradient norm")
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(steps) == 1 and steps[0].get_data().values.sum() == 1000

    edges, counts = np.array([0.0, 0.5, 1.0]), np.array([3, 7])
    ax = plotting.plot_histogram((edges, counts), density=True)
    values_drawn = [p for p in ax.patches if isinstance(p, StepPatch)][0].get_data().values
    assert np.allclose(values_drawn, [0.6, 1.4])

    ax = plotting.plot_histogram({"CE": values, "GHM": values ** 2}, bins=20, logx=True)
    assert len([p for p in ax.patches if isinstance(p, StepPatch)]) == 2
    assert ax.get_xscale() == "log" and ax.get_legend() is not None
    with pytest.raises(ValueError, match="edges"):
        plotting.plot_histogram((edges, np.array([1, 2, 3])))


def test_plot_training_curves_from_a_file_and_records(tmp_path: Path) -> None:
    records = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(20)]
    records += [{"step": i, "AP": i / 100} for i in range(0, 20, 5)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ax = plotting.plot_training_curves(path, keys=("loss", "AP"))
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"loss", "AP"}
    assert len(lines["loss"].get_xdata()) == 20 and len(lines["AP"].get_xdata()) == 4
    assert lines["AP"].get_xdata().tolist() == [0, 5, 10, 15]
    ax = plotting.plot_training_curves(records, smoothing=0.5)
    assert ax.get_lines()[0].get_ydata()[0] == 1.0
    with pytest.raises(ValueError, match="no record"):
        plotting.plot_training_curves(records, keys=("AR",))


def test_plot_results_table_formats_mean_and_std() -> None:
    rows = {"CE": {"AP": 0.2, "AP50": (0.41, 0.02)},
            "focal": {"AP": [0.3, 0.32, 0.34], "AP50": (0.5, 0.01)},
            "GHM": {"AP": 0.25}}
    ax = plotting.plot_results_table(rows, ["AP", "AP50"], fmt="{:.2f}", title="RetinaNet")
    table = ax.tables[0]
    text = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    assert text[1, 0] == "0.20" and text[1, 1] == "0.41 ± 0.02"
    assert text[2, 0] == "0.32 ± 0.02" and text[3, 1] == "—"
    assert text[0, 0] == "AP" and text[2, -1] == "focal"
    assert table[2, 0].get_text().get_fontweight() == "bold"  # best AP
    assert table[1, 0].get_text().get_fontweight() != "bold"
    assert plotting.format_value("n/a") == ("n/a", None)
    # an undefined metric (NaN, or null in JSON) shows as a dash and averages over defined ones
    assert plotting.format_value(float("nan")) == ("—", None)
    assert plotting.format_value((float("nan"), 0.0)) == ("—", None)
    assert plotting.format_value([0.3, float("nan"), None, 0.5], "{:.1f}") == ("0.4 ± 0.1", 0.4)
    assert plotting.format_value([float("nan")]) == ("—", None)


def test_style_is_a_context() -> None:
    default = matplotlib.rcParams["axes.prop_cycle"]
    with plotting.style():
        assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0] == plotting.PALETTE[0]
    assert matplotlib.rcParams["axes.prop_cycle"] == default


def test_plot_grid_results_bars_at_the_mean_with_std_and_a_dot_per_seed() -> None:
    rows = {"FL": [0.30, 0.32, 0.34], "GHM-C": [0.28, 0.29], "CE": [0.1], "none": []}
    ax = plotting.plot_grid_results(rows, xlabel="AP (points)", scale=100, reference="FL")
    bars = boxes_on(ax)
    assert [round(b.get_width(), 6) for b in bars] == [32.0, 28.5, 10.0]
    errs = [c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr]
    half = [float(np.ptp(seg[:, 0])) / 2 for c in errs for seg in c.lines[2][0].get_segments()]
    assert half == pytest.approx([2.0, 100 * np.std([0.28, 0.29], ddof=1), 0.0])
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert sorted(len(d.get_xdata()) for d in dots) == [1, 2, 3]
    assert any(line.get_linestyle() == "--" and line.get_xdata()[0] == pytest.approx(32.0)
               for line in ax.lines)  # the reference line at FL's mean
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    assert any("no runs" in t.get_text() for t in ax.texts)
    with pytest.raises(ValueError, match="reference"):
        plotting.plot_grid_results(rows, reference="SSD")


def test_plot_metric_against_draws_means_and_error_bars() -> None:
    x = [0.0, 0.1, 0.4]
    series = {"FL": [[0.3, 0.5], [0.2, 0.2], 0.1], "GHM-C": [[0.4], [0.3], [0.2, 0.4]]}
    ax = plotting.plot_metric_against(x, series, xlabel="outliers", ylabel="AP", scale=10)
    lines = [c.lines[0] for c in ax.containers]
    assert [list(np.round(line.get_ydata(), 6)) for line in lines] == [[4.0, 2.0, 1.0],
                                                                    [4.0, 3.0, 3.0]]
    spans = [float(np.ptp(seg[:, 1])) / 2 for seg in ax.containers[0].lines[2][0].get_segments()]
    assert spans == pytest.approx([10 * np.std([0.3, 0.5], ddof=1), 0.0, 0.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["FL", "GHM-C"]
    with pytest.raises(ValueError, match="points"):
        plotting.plot_metric_against(x, {"FL": [0.1]}, xlabel="x", ylabel="y")


def test_plot_intervals_draws_each_point_with_its_interval() -> None:
    series = {"FL": [(0.3, 0.28, 0.33), (0.4, 0.35, 0.41), None],
              "GHM-C": [(0.2, 0.1, 0.25), (0.3, 0.3, 0.3), (0.35, 0.3, 0.4)]}
    ax = plotting.plot_intervals([0.5, 1, 2], series, xlabel="schedule", ylabel="AP",
                                 scale=100, logx=True)
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1
             and line.get_linestyle() != "None"]
    assert [list(line.get_xdata()) for line in lines] == [[0.5, 1.0], [0.5, 1.0, 2.0]]
    assert list(lines[0].get_ydata()) == pytest.approx([30, 40])
    caps = [c for c in ax.containers]
    segs = caps[1].lines[2][0].get_segments()  # GHM-C's error bars: (x, low) -> (x, high)
    assert [tuple(np.round(s[:, 1], 6)) for s in segs] == [(10, 25), (30, 30), (30, 40)]
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="3 x"):
        plotting.plot_intervals([1, 2, 3], {"a": [(1, 0, 2)]}, xlabel="", ylabel="")
    with pytest.raises(ValueError, match="does not hold"):
        plotting.plot_intervals([1], {"a": [(1, 2, 3)]}, xlabel="", ylabel="")
    plt.close("all")
