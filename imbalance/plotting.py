"""The book's figures, in one colour-blind-safe style.

Every function draws inside :func:`style` (Okabe–Ito colours, a light grid, no top/right spines)
and returns the matplotlib Axes it drew on (``ax.figure`` is the Figure); none calls
``plt.show()``. Pass ``ax`` to draw into an existing figure. Importing this module changes no
global matplotlib setting.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from imbalance.files import read_jsonl

# Okabe & Ito (2008): distinguishable under every common colour-vision deficiency.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")

STYLE: dict[str, Any] = {
    "axes.prop_cycle": mpl.cycler(color=PALETTE[:7]),
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context manager applying the book's rcParams; use it around your own figures too."""
    with mpl.rc_context(STYLE):
        yield


def colour(i: int) -> str:
    """The i-th palette colour, cycling."""
    return PALETTE[i % len(PALETTE)]


def _text_colour(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    r, g, b = mpl.colors.to_rgb(background)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    fig, ax = plt.subplots(figsize=figsize)
    return ax


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _image_hwc(image: Any) -> np.ndarray:
    """An image as (H, W, 3) for imshow: a PIL image, an (H, W, 3) array or a (3, H, W) tensor."""
    arr = _as_array(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(arr, 0.0, 1.0)
    return arr


def _finish(ax: Axes, title: str | None, logy: bool, legend: bool,
            legend_title: str | None = None) -> Axes:
    """The common last touches: log y axis, title, legend when there is more than one series."""
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(title=legend_title)
    return ax


def _name(class_names: Sequence[str] | Mapping[int, str], label: int) -> str:
    try:
        return str(class_names[label])
    except (KeyError, IndexError):
        return str(label)


def show_detections(image: Any, boxes: Any, labels: Any,
                    class_names: Sequence[str] | Mapping[int, str], scores: Any = None,
                    gt_boxes: Any = None, gt_labels: Any = None, *, score_threshold: float = 0.0,
                    ax: Axes | None = None, title: str | None = None) -> Axes:
    """An image with predicted boxes (solid, labelled "name score") and ground truth (dashed).

    Args:
        image: PIL image, array (H, W, 3) or tensor (3, H, W) in [0, 1] or uint8.
        boxes: (N, 4) predicted boxes in (x1, y1, x2, y2) pixels.
        labels: (N,) integer labels, indices into ``class_names``.
        class_names: label → name (a list indexed by label, or a mapping).
        scores: (N,) scores, or None; boxes scoring below ``score_threshold`` are not drawn.
        gt_boxes, gt_labels: (G, 4) and (G,) ground truth, drawn dashed, or None.
    Colour encodes the class, the same for prediction and ground truth.
    """
    with style():
        img = _image_hwc(image)
        ax = _axes(ax, (5, 5 * img.shape[0] / max(img.shape[1], 1)))
        ax.imshow(img)
        ax.set_axis_off()
        if gt_boxes is not None:
            gtb = _as_array(gt_boxes).reshape(-1, 4)
            gtl = _as_array(gt_labels).reshape(-1) if gt_labels is not None else np.zeros(len(gtb))
            for (x1, y1, x2, y2), lab in zip(gtb, gtl, strict=True):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.2,
                                       linestyle="--", edgecolor=colour(int(lab))))
        pb = _as_array(boxes).reshape(-1, 4)
        pl = _as_array(labels).reshape(-1)
        ps = _as_array(scores).reshape(-1) if scores is not None else None
        for i, ((x1, y1, x2, y2), lab) in enumerate(zip(pb, pl, strict=True)):
            if ps is not None and ps[i] < score_threshold:
                continue
            c = colour(int(lab))
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.6,
                                   edgecolor=c))
            text = _name(class_names, int(lab)) + (f" {ps[i]:.2f}" if ps is not None else "")
            ax.text(x1, y1, text, fontsize=7, color=_text_colour(c), va="bottom", ha="left",
                    bbox={"facecolor": c, "edgecolor": "none", "pad": 1.0, "alpha": 0.85})
        if title:
            ax.set_title(title)
    return ax


def plot_curves(x: Any, curves: Mapping[str, Any], xlabel: str, ylabel: str,
                title: str | None = None, ax: Axes | None = None, logy: bool = False,
                *, legend_title: str | None = None) -> Axes:
    """A family of curves y(x), one line per entry of ``curves`` (label → y, same length as x):
    the loss chapters' loss and gradient curves for several γ, say. Colour and dash both change
    from curve to curve, so the figure reads in grey too."""
    with style():
        ax = _axes(ax, (5, 3.5))
        xs = _as_array(x)
        for i, (label, y) in enumerate(curves.items()):
            ax.plot(xs, _as_array(y), label=str(label), color=colour(i),
                    linestyle=LINESTYLES[i % len(LINESTYLES)])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _finish(ax, title, logy, len(curves) > 1, legend_title)
    return ax


def _hist(data: Any, bins: int | Sequence[float], log_bins: bool) -> tuple[np.ndarray, ...]:
    if isinstance(data, tuple) and len(data) == 2:
        edges, counts = (_as_array(d) for d in data)
        if len(edges) != len(counts) + 1:
            raise ValueError(f"(edges, counts) need len(edges) = len(counts) + 1; got "
                             f"{len(edges)} and {len(counts)}")
        return edges, counts
    values = _as_array(data).reshape(-1)
    if log_bins and isinstance(bins, int):
        pos = values[values > 0]
        lo, hi = (pos.min(), pos.max()) if pos.size else (1.0, 10.0)
        bins = np.geomspace(lo, hi if hi > lo else lo * 10, bins + 1)
    counts, edges = np.histogram(values, bins=bins)
    return edges, counts


def plot_histogram(data: Any, bins: int | Sequence[float] = 50, *, xlabel: str = "",
                   ylabel: str = "count", title: str | None = None, logx: bool = False,
                   logy: bool = False, density: bool = False, ax: Axes | None = None) -> Axes:
    """Histograms as step outlines: gradient norm densities (GHM), IoU distributions, sizes.

    Args:
        data: raw values; or a precomputed ``(edges, counts)`` tuple; or a mapping
            label → either of those, for several histograms on one Axes.
        bins: for raw values, numpy-style bins (log-spaced when ``logx`` and an int).
        density: divide counts by total count × bin width.
    """
    series = data if isinstance(data, Mapping) else {None: data}
    with style():
        ax = _axes(ax, (5, 3.5))
        for i, (label, d) in enumerate(series.items()):
            edges, counts = _hist(d, bins, logx)
            counts = counts.astype(np.float64)
            if density:
                counts = counts / max(counts.sum(), 1) / np.diff(edges)
            ax.stairs(counts, edges, label=None if label is None else str(label),
                      color=colour(i), fill=len(series) == 1, alpha=1.0 if len(series) > 1 else 0.6,
                      linewidth=1.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density" if density and ylabel == "count" else ylabel)
        if logx:
            ax.set_xscale("log")
        _finish(ax, title, logy, len(series) > 1)
    return ax


def _smooth(y: np.ndarray, weight: float) -> np.ndarray:
    if weight <= 0:
        return y
    out, last = np.empty_like(y), y[0]
    for i, v in enumerate(y):
        last = weight * last + (1 - weight) * v
        out[i] = last
    return out


def plot_training_curves(metrics: str | os.PathLike | Iterable[Mapping[str, Any]],
                         keys: Sequence[str] = ("loss",), *, x: str = "step",
                         smoothing: float = 0.0, logy: bool = False, title: str | None = None,
                         ax: Axes | None = None) -> Axes:
    """Training curves from a metrics log: one line per key, against ``x``.

    Args:
        metrics: a JSONL file or an iterable of records (dicts); a record contributes a point to
            every key it has.
        keys: the metrics to plot.
        x: the record field for the x axis; records without it use their index.
        smoothing: exponential moving average weight in [0, 1) (0 is none).
    """
    records = read_jsonl(metrics) if isinstance(metrics, str | os.PathLike) else list(metrics)
    with style():
        ax = _axes(ax, (5, 3.5))
        for i, key in enumerate(keys):
            pts = [(r.get(x, n), r[key]) for n, r in enumerate(records)
                   if key in r and r[key] is not None and math.isfinite(float(r[key]))]
            if not pts:
                raise ValueError(f"no record has a finite {key!r}")
            xs, ys = (np.asarray(v, dtype=np.float64) for v in zip(*pts, strict=True))
            ax.plot(xs, _smooth(ys, smoothing), label=key, color=colour(i),
                    linestyle=LINESTYLES[i % len(LINESTYLES)])
        ax.set_xlabel(x)
        ax.set_ylabel(keys[0] if len(keys) == 1 else "value")
        _finish(ax, title, logy, len(keys) > 1)
    return ax


def format_value(value: Any, fmt: str = "{:.3f}") -> tuple[str, float | None]:
    """A table cell: text and the number to rank it by (None for text).

    A number prints with ``fmt``; a (mean, std) tuple, or a list of repeats (their mean and
    sample std), as "mean ± std"; None or NaN (an undefined metric) as "—"; anything else as str.
    Repeats that are NaN are left out of the mean.
    """
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "—", None
    if isinstance(value, tuple) and len(value) == 2 and np.isnan(float(value[0])):
        return "—", None
    if isinstance(value, tuple) and len(value) == 2:
        mean, std = float(value[0]), float(value[1])
        return f"{fmt.format(mean)} ± {fmt.format(std)}", mean
    if isinstance(value, list | np.ndarray):
        values = np.asarray([np.nan if v is None else v for v in np.ravel(value)],
                            dtype=np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            return "—", None
        mean, std = _mean_std(values)
        return f"{fmt.format(mean)} ± {fmt.format(std)}", mean
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return fmt.format(float(value)), float(value)
    return str(value), None


def plot_results_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], *,
                       fmt: str = "{:.3f}", best: str | None = "max", title: str | None = None,
                       ax: Axes | None = None) -> Axes:
    """A results table as a figure: one row per method, one column per metric.

    Args:
        rows: row name → {column → value}; values as :func:`format_value` takes them, missing
            ones print "—".
        columns: the columns, in order.
        best: "max" or "min" to set each column's best number in bold, or None.
    """
    if best not in ("max", "min", None):
        raise ValueError(f"best={best!r}: choose 'max', 'min' or None")
    names = list(rows)
    cells = [[format_value(rows[r].get(c), fmt) for c in columns] for r in names]
    with style():
        ax = _axes(ax, (1.6 + 1.4 * len(columns), 0.6 + 0.35 * (len(names) + 1)))
        ax.set_axis_off()
        table = ax.table(cellText=[[t for t, _ in row] for row in cells], rowLabels=names,
                         colLabels=list(columns), loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1.0, 1.3)
        for (r, c), cell in table.get_celld().items():
            cell.set_edgecolor("#BBBBBB")
            if r == 0 or c == -1:
                cell.set_text_props(fontweight="bold")
                cell.set_facecolor("#F0F0F0")
        if best is not None:
            pick = max if best == "max" else min
            for j in range(len(columns)):
                scored = [(v, i) for i, row in enumerate(cells) if (v := row[j][1]) is not None
                          and math.isfinite(v)]
                if scored:
                    top = pick(v for v, _ in scored)
                    for v, i in scored:
                        if v == top:
                            table[i + 1, j].set_text_props(fontweight="bold")
        if title:
            ax.set_title(title)
    return ax


def _repeats(values: Any) -> np.ndarray:
    """The finite repeats of one measurement (a number or a list of per-seed values)."""
    arr = np.atleast_1d(np.asarray(values if values is not None else [], dtype=np.float64))
    return arr[np.isfinite(arr)]


def _mean_std(arr: np.ndarray) -> tuple[float, float]:
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def plot_grid_results(rows: Mapping[str, Any], *, xlabel: str = "AP", scale: float = 1.0,
                      reference: str | None = None, title: str | None = None,
                      ax: Axes | None = None) -> Axes:
    """One metric of an experiment grid: a bar per configuration at the mean over seeds, an
    error bar of ± one sample standard deviation, and a dot per seed.

    Args:
        rows: configuration → the per-seed values of the metric (a list; one number is one seed).
        scale: multiply every value by it (100 gives COCO's points).
        reference: a configuration whose mean is drawn as a vertical dashed line, the baseline
            the others are read against.
    Rows run top to bottom in the given order. A configuration without a finite value gets no
    bar and the label "no runs".
    """
    names = [str(r) for r in rows]
    values = [scale * _repeats(v) for v in rows.values()]
    if reference is not None and reference not in rows:
        raise ValueError(f"reference {reference!r} is not one of the rows {names}")
    with style():
        ax = _axes(ax, (6, 0.9 + 0.42 * len(names)))
        for y, arr in enumerate(values):
            mean, std = _mean_std(arr)
            if arr.size == 0:
                ax.text(0, y, " no runs", va="center", fontsize=8)
                continue
            c = colour(0 if reference is None or names[y] != reference else 1)
            ax.barh(y, mean, height=0.6, color=c, alpha=0.55)
            ax.errorbar(mean, y, xerr=std, fmt="none", ecolor="black", capsize=3, lw=1)
            jitter = np.linspace(-0.15, 0.15, arr.size) if arr.size > 1 else np.zeros(1)
            ax.plot(arr, y + jitter, "o", color="black", markersize=3)
        if reference is not None:
            ref = _mean_std(values[names.index(reference)])[0]
            if math.isfinite(ref):
                ax.axvline(ref, color=colour(1), linestyle="--", lw=1)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.grid(False, axis="y")
        ax.set_xlabel(xlabel)
        _finish(ax, title, False, False)
    return ax


def plot_metric_against(x: Sequence[float], series: Mapping[str, Sequence[Any]], *,
                        xlabel: str, ylabel: str, scale: float = 1.0, title: str | None = None,
                        ax: Axes | None = None) -> Axes:
    """A metric against a knob, one line per method: the mean over seeds with ± one sample
    standard deviation as error bars (e.g. AP against the fraction of outliers).

    Args:
        x: the knob's values.
        series: method → one entry per x, each the per-seed values there (a list or a number).
        scale: multiply every value by it.
    """
    xs = np.asarray(x, dtype=np.float64)
    with style():
        ax = _axes(ax, (5, 3.5))
        for i, (label, per_x) in enumerate(series.items()):
            if len(per_x) != len(xs):
                raise ValueError(f"series {label!r} has {len(per_x)} points for {len(xs)} x")
            stats = np.array([_mean_std(scale * _repeats(v)) for v in per_x])
            ax.errorbar(xs + (i - (len(series) - 1) / 2) * 0.004 * np.ptp(xs), stats[:, 0],
                        yerr=stats[:, 1], label=str(label), color=colour(i),
                        linestyle=LINESTYLES[i % len(LINESTYLES)], marker="o", capsize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _finish(ax, title, False, len(series) > 1)
    return ax


def plot_intervals(x: Sequence[float], series: Mapping[str, Sequence[Any]], *, xlabel: str,
                   ylabel: str, scale: float = 1.0, logx: bool = False,
                   title: str | None = None, ax: Axes | None = None) -> Axes:
    """Points with intervals against a knob, one line per series (e.g. AP against the schedule
    length, with each mean's 95 % interval).

    Args:
        x: the knob's values.
        series: label → one entry per x, each ``(mean, low, high)`` or ``None`` (not measured).
        scale: multiply every value by it.
        logx: a base-2 logarithmic x axis (schedule multiples 0.25, 0.5, 1, 2).
    """
    xs = np.asarray(x, dtype=np.float64)
    with style():
        ax = _axes(ax, (5, 3.5))
        for i, (label, points) in enumerate(series.items()):
            if len(points) != len(xs):
                raise ValueError(f"series {label!r} has {len(points)} points for {len(xs)} x")
            keep = [j for j, p in enumerate(points) if p is not None]
            if not keep:
                continue
            mid, low, high = (scale * np.array([points[j][k] for j in keep]) for k in range(3))
            if np.any(low > mid) or np.any(high < mid):
                raise ValueError(f"series {label!r}: an interval does not hold its point")
            ax.errorbar(xs[keep], mid, yerr=[mid - low, high - mid], label=str(label),
                        color=colour(i), linestyle=LINESTYLES[i % len(LINESTYLES)], marker="o",
                        capsize=3)
        if logx:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _finish(ax, title, False, len(series) > 1)
    return ax


def cumulative_share(values: Any, max_points: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    """The curve of :func:`plot_cumulative_share`: sort ``values`` (non-negative, any shape)
    ascending; x is the fraction of elements so far, y their fraction of ``Σ values``.

    Returns:
        float64 ``(x, y)``, both starting at 0 and ending at 1, at most ``max_points`` long
        (evenly spaced in x; the full curve is piecewise linear between them).
    """
    v = np.sort(_as_array(values).astype(np.float64).reshape(-1))
    if v.size and v[0] < 0:
        raise ValueError("cumulative_share needs non-negative values")
    y = np.concatenate([[0.0], np.cumsum(v)])
    y = y / y[-1] if y[-1] > 0 else np.linspace(0.0, 1.0, len(y))
    idx = np.unique(np.linspace(0, v.size, min(max_points, v.size + 1)).round().astype(int))
    return idx / max(v.size, 1), y[idx]


def plot_cumulative_share(values: Mapping[str, Any], *, xlabel: str = "fraction of elements",
                          ylabel: str = "cumulative normalised loss", title: str | None = None,
                          ax: Axes | None = None, legend_title: str | None = None) -> Axes:
    """Cumulative distribution of a quantity over elements sorted from smallest to largest:
    the Focal Loss paper's Fig. 4 (each element's loss, for several γ). One line per entry of
    ``values`` (label → non-negative values of any shape; series may differ in length).
    A curve hugging the bottom until x ≈ 1 means a few elements carry almost everything."""
    curves = {label: cumulative_share(v) for label, v in values.items()}
    with style():
        ax = _axes(ax, (5, 3.5))
        for i, (label, (x, y)) in enumerate(curves.items()):
            ax.plot(x, y, label=str(label), color=colour(i),
                    linestyle=LINESTYLES[i % len(LINESTYLES)])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        _finish(ax, title, False, len(curves) > 1, legend_title)
    return ax


def plot_shares(shares: Mapping[str, Mapping[str, float]], *, xlabel: str = "share",
                title: str | None = None, ax: Axes | None = None,
                legend_title: str | None = None) -> Axes:
    """Stacked horizontal bars showing how a total splits into groups, one bar per row: e.g.
    the share of the regression gradient carried by inliers and outliers under two losses.

    Args:
        shares: row label → {group → share} (non-negative; a group missing from a row is 0).
            Drawn as given: normalise a row to sum to 1 for fractions. Segments of at least
            0.04 are labelled with their percentage.
    Rows run top to bottom in the given order; the legend (the groups) sits right of the bars.
    """
    rows = [str(r) for r in shares]
    groups = list(dict.fromkeys(g for r in shares.values() for g in r))
    table = np.array([[float(r.get(g, 0.0)) for g in groups] for r in shares.values()])
    if table.size and (table < 0).any():
        raise ValueError("plot_shares needs non-negative shares")
    with style():
        ax = _axes(ax, (6, 0.9 + 0.45 * len(rows)))
        left = np.zeros(len(rows))
        for i, group in enumerate(groups):
            c = colour(i)
            ax.barh(rows, table[:, i], left=left, height=0.6, color=c, label=str(group))
            for y, (start, width) in enumerate(zip(left, table[:, i], strict=True)):
                if width >= 0.04:
                    ax.text(start + width / 2, y, f"{width:.0%}", ha="center", va="center",
                            fontsize=8, color=_text_colour(c))
            left += table[:, i]
        ax.invert_yaxis()
        ax.grid(False, axis="y")
        ax.set_xlabel(xlabel)
        _finish(ax, title, False, False)
        if groups:
            ax.legend(title=legend_title, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def _feature_map_2d(x: Any, reduce: str) -> np.ndarray:
    """A map (H, W) from (H, W), (C, H, W) or (1, C, H, W), reducing channels by ``reduce``."""
    arr = _as_array(x).astype(np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"a feature map must be (H, W), (C, H, W) or (1, C, H, W); "
                         f"got {arr.shape}")
    if reduce == "norm":
        return np.sqrt((arr ** 2).sum(axis=0))
    if reduce == "mean":
        return arr.mean(axis=0)
    raise ValueError(f"reduce={reduce!r}: choose 'norm' (L2 over channels) or 'mean'")


def plot_feature_maps(rows: Mapping[str, Sequence[Any]], col_titles: Sequence[str] | None = None,
                      *, reduce: str = "norm", share: str = "column", cmap: str = "viridis",
                      colorbar: bool = True, panel: float = 1.7, title: str | None = None,
                      axes: Any = None) -> np.ndarray:
    """A grid of feature maps: one row per entry of ``rows``, one column per map in a row
    (e.g. rows "before"/"after", columns the levels of a feature pyramid).

    Args:
        rows: row label → maps, each (H, W), or (C, H, W) / (1, C, H, W) reduced over the
            channels by ``reduce`` ("norm": the L2 norm, "mean": the mean); all rows the same
            length. Maps of different sizes fill panels of one size, so a coarse map shows as
            large pixels.
        col_titles: one title per column, or None.
        share: one colour scale per "column", per "row", for "all" panels, or "none".
        colorbar: one colour bar per shared scale (under each column, right of each row, or
            one for all); none with ``share="none"``.
        axes: a (rows, columns) array of Axes to draw into, or None for a new figure.

    Returns:
        The (rows, columns) numpy array of Axes.
    """
    if share not in ("column", "row", "all", "none"):
        raise ValueError(f"share={share!r}: choose 'column', 'row', 'all' or 'none'")
    labels = [str(r) for r in rows]
    maps = [[_feature_map_2d(m, reduce) for m in row] for row in rows.values()]
    n_cols = len(maps[0]) if maps else 0
    if not maps or n_cols == 0 or any(len(r) != n_cols for r in maps):
        raise ValueError("rows must be non-empty and all hold the same number of maps")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ValueError(f"{len(col_titles)} column titles for {n_cols} columns")
    lo = np.array([[m.min() for m in r] for r in maps])
    hi = np.array([[m.max() for m in r] for r in maps])
    if share == "column":
        lo, hi = np.broadcast_to(lo.min(0), lo.shape), np.broadcast_to(hi.max(0), hi.shape)
    elif share == "row":
        lo, hi = (np.broadcast_to(lo.min(1)[:, None], lo.shape),
                  np.broadcast_to(hi.max(1)[:, None], hi.shape))
    elif share == "all":
        lo, hi = np.full(lo.shape, lo.min()), np.full(hi.shape, hi.max())
    with style():
        if axes is None:
            _, axes = plt.subplots(len(maps), n_cols, squeeze=False, layout="constrained",
                                   figsize=(panel * n_cols + 0.6, panel * len(maps) + 0.8))
        axes = np.asarray(axes).reshape(len(maps), n_cols)
        images = np.empty(axes.shape, dtype=object)
        for i, j in np.ndindex(axes.shape):
            ax = axes[i, j]
            images[i, j] = ax.imshow(maps[i][j], cmap=cmap, vmin=lo[i, j], vmax=hi[i, j],
                                     interpolation="nearest", extent=(0, 1, 1, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0 and col_titles is not None:
                ax.set_title(str(col_titles[j]))
            if j == 0:
                ax.set_ylabel(labels[i])
        fig = axes[0, 0].figure
        if colorbar and share == "column":
            for j in range(n_cols):
                fig.colorbar(images[0, j], ax=list(axes[:, j]), orientation="horizontal",
                             shrink=0.9, aspect=12)
        elif colorbar and share == "row":
            for i in range(len(maps)):
                fig.colorbar(images[i, 0], ax=list(axes[i, :]), shrink=0.9)
        elif colorbar and share == "all":
            fig.colorbar(images[0, 0], ax=list(axes.flat), shrink=0.9)
        if title:
            fig.suptitle(title)
    return axes


def plot_matrix(matrix: Any, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
                *, fmt: str = "{:.2f}", vmin: float | None = None, vmax: float | None = None,
                cmap: str = "viridis", xlabel: str = "", ylabel: str = "",
                title: str | None = None, colorbar: bool = True, ax: Axes | None = None) -> Axes:
    """A matrix as an annotated heat map (each cell printed with ``fmt``): a correlation
    matrix between feature levels, a confusion matrix.

    Args:
        matrix: (R, C) numbers.
        row_labels, col_labels: R and C tick labels (``col_labels`` defaults to the rows').
        vmin, vmax: the colour scale's limits (default: the matrix's range).
    Rows run top to bottom; the text colour follows the cell's colour for contrast.
    """
    m = _as_array(matrix).astype(np.float64)
    cols = list(row_labels) if col_labels is None else list(col_labels)
    if m.ndim != 2 or m.shape != (len(row_labels), len(cols)):
        raise ValueError(f"matrix of shape {m.shape} for {len(row_labels)} x {len(cols)} labels")
    with style():
        ax = _axes(ax, (0.9 + 0.55 * m.shape[1], 0.6 + 0.5 * m.shape[0]))
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        colormap, norm = im.get_cmap(), im.norm
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                        color=_text_colour(mpl.colors.to_hex(colormap(norm(v)))))
        ax.set_xticks(range(m.shape[1]), [str(c) for c in cols])
        ax.set_yticks(range(m.shape[0]), [str(r) for r in row_labels])
        ax.grid(False)
        ax.spines[:].set_visible(False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if colorbar:
            ax.figure.colorbar(im, ax=ax, shrink=0.8)
        if title:
            ax.set_title(title)
    return ax
