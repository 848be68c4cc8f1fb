"""Markdown reports of kept grid results: the learning-rate sweep, the schedule ladder with its
intervals, what each doubling of the schedule changes, the gaps to a baseline at every schedule,
and the wall time of a run.

    python -m imbalance.lab.report --sweeps book/results/pilot/*/lr_sweep \\
        --ladders book/results/pilot/*/ladder --baseline "FL + SL1" \\
        --figure book/results/pilot/ladder.png --write book/results/pilot/README.md

Everything is computed from the kept runs' files (``summary.json`` of each folder, and each run's
``final.json`` and ``metrics.jsonl``); ``--write`` replaces the part of a file between
:data:`BEGIN` and :data:`END` (or appends it), so the prose around the tables stays by hand.
Intervals are Student-t intervals at 95 % (:mod:`imbalance.lab.statistics`): of a mean over seeds
in the ladder, Welch's on differences; with one seed there is no interval.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from imbalance.files import read_jsonl, write_text_atomic
from imbalance.lab.experiments import kept_run, read_final, read_summary
from imbalance.lab.statistics import mean_interval, point_interval, welch_interval
from imbalance.plotting import plot_intervals

BEGIN = "<!-- report: begin (python -m imbalance.lab.report) -->"
END = "<!-- report: end -->"
#: the criterion of a converged schedule: doubling it moves the mean AP by less than this
CONVERGED_POINTS = 2.0


@dataclass
class Results:
    """The rows of one or more grid summaries, each with the folder its runs are kept in."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)

    def values(self, name: str, metric: str = "AP") -> list[float]:
        """The finite per-seed values of ``metric`` of row ``name``."""
        return [float(v) for v in self.rows[name][metric]["values"]
                if v is not None and math.isfinite(v)]

    def runs(self, name: str) -> list[Path]:
        """The kept run folders of row ``name`` (``<folder>/runs/<slug>/seed<k>``)."""
        return [kept_run(self.folders[name], name, s) for s in self.rows[name]["seeds"]]


def collect(folders: Sequence[str | Path]) -> Results:
    """Read the ``summary.json`` of every folder into one :class:`Results`. A row name found in two
    folders must come from the same runs (the same seeds); otherwise it is an error."""
    out = Results()
    if not folders:
        raise ValueError("no result folders given")
    for folder in map(Path, folders):
        summary = read_summary(folder / "summary.json")
        for name, row in summary["rows"].items():
            if name in out.rows and out.rows[name]["seeds"] != row["seeds"]:
                raise ValueError(f"{name!r} is in {out.folders[name]} (seeds "
                                 f"{out.rows[name]['seeds']}) and in {folder} (seeds "
                                 f"{row['seeds']}): collect them from one folder")
            out.rows.setdefault(name, row)
            out.folders.setdefault(name, folder)
    return out


def _points(v: float) -> str:
    return f"{100 * v:.1f}"


def _mean_cell(values: Sequence[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{_points(values[0])} (1 seed)"
    mean, low, high = mean_interval(values)
    return f"{_points(mean)} [{_points(low)}, {_points(high)}] ({len(values)} seeds)"


def _diff_cell(a: Sequence[float], b: Sequence[float]) -> str:
    if not a or not b:
        return ""
    if len(a) < 2 or len(b) < 2:
        return f"{100 * (sum(a) / len(a) - sum(b) / len(b)):+.1f} (no interval: one seed)"
    w = welch_interval(a, b)
    return (f"{100 * w.difference:+.1f} [{100 * w.low:+.1f}, {100 * w.high:+.1f}] "
            f"{w.verdict}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _label(row: Mapping[str, Any]) -> str:
    lr = float(row.get("lr_factor", 1.0))
    return row["configuration"] + (f" (lr {lr:g}x)" if lr != 1.0 else "")


def sweep_table(results: Results, metric: str = "AP") -> str:
    """Configurations down, learning-rate factors across: the mean ``metric`` (points), the best
    factor of each configuration in bold and flagged when it is at the edge of the sweep."""
    table: dict[str, dict[float, list[float]]] = {}
    for name, row in results.rows.items():
        table.setdefault(row["configuration"], {})[float(row.get("lr_factor", 1.0))] = \
            results.values(name, metric)
    factors = sorted({f for per in table.values() for f in per})
    out = []
    for conf, per in table.items():
        means = {f: sum(v) / len(v) for f, v in per.items() if v}
        best = max(means, key=means.__getitem__) if means else None
        cells = []
        for f in factors:
            if f not in means:
                cells.append("")
                continue
            cell = _points(means[f]) + ("" if len(per[f]) == 1 else f" ({len(per[f])} seeds)")
            cells.append(f"**{cell}**" if f == best else cell)
        tried = sorted(means)
        edge = best is not None and len(tried) > 1 and best in (tried[0], tried[-1])
        out.append([conf, *cells, "at the edge" if edge else ""])
    return _table(["configuration", *[f"lr {f:g}x" for f in factors], "best"], out)


def ladder_points(results: Results, metric: str = "AP"
                  ) -> dict[str, dict[float, list[float]]]:
    """Configuration label (with its learning rate) → schedule multiple → per-seed values."""
    out: dict[str, dict[float, list[float]]] = {}
    for name, row in results.rows.items():
        out.setdefault(_label(row), {})[float(row.get("schedule", 1.0))] = \
            results.values(name, metric)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def ladder_table(results: Results, metric: str = "AP") -> str:
    """Configurations down, schedule multiples across: the mean over seeds with its 95 %
    t-interval, in points."""
    points = ladder_points(results, metric)
    schedules = sorted({s for per in points.values() for s in per})
    rows = [[label, *[_mean_cell(per.get(s, [])) for s in schedules]]
            for label, per in points.items()]
    return _table(["configuration", *[f"{s:g}x" for s in schedules]], rows)


def doubling_table(results: Results, metric: str = "AP") -> str:
    """What each doubling of the schedule changes (Welch's interval on the difference of the
    means), and whether the move is under :data:`CONVERGED_POINTS` on the mean."""
    rows = []
    for label, per in ladder_points(results, metric).items():
        for s, values in per.items():
            longer = per.get(2 * s)
            if not values or not longer:
                continue
            moved = 100 * abs(sum(longer) / len(longer) - sum(values) / len(values))
            rows.append([label, f"{s:g}x → {2 * s:g}x", _diff_cell(longer, values),
                         "yes" if moved < CONVERGED_POINTS else "no"])
    return _table(["configuration", "doubling", f"change in {metric} [95 % interval]",
                   f"moves < {CONVERGED_POINTS:g}"], rows)


def gap_table(results: Results, baseline: str, against: Sequence[str] | None = None,
              metric: str = "AP") -> str:
    """Each configuration minus ``baseline`` (a configuration's name, at its own learning rate)
    at every schedule both were run at, with Welch's interval and verdict: does the gap close with
    training?"""
    points = ladder_points(results, metric)
    base = [k for k in points if k == baseline or k.startswith(baseline + " (lr ")]
    if len(base) != 1:
        raise KeyError(f"baseline {baseline!r} matches {base or 'nothing'} in {list(points)}")
    ref = points[base[0]]
    others = [k for k in points if k != base[0] and (against is None or any(
        k == a or k.startswith(a + " (lr ") for a in against))]
    schedules = sorted({s for k in others for s in points[k]} & set(ref))
    rows = [[k, *[_diff_cell(points[k].get(s, []), ref[s]) for s in schedules]] for k in others]
    return _table([f"minus {base[0]}", *[f"{s:g}x" for s in schedules]], rows)


def wall_times(results: Results) -> dict[str, dict[float, list[float]]]:
    """Configuration label → schedule → the wall time (s) of each kept run (``final.json``)."""
    out: dict[str, dict[float, list[float]]] = {}
    for name, row in results.rows.items():
        times = []
        for run in results.runs(name):
            t = (read_final(run) or {}).get("wall_time_s")
            if t is not None:
                times.append(float(t))
        out.setdefault(_label(row), {})[float(row.get("schedule", 1.0))] = times
    return out


def wall_time_table(results: Results) -> str:
    """The mean (min–max) wall time of a run, in minutes, per configuration and schedule."""
    times = wall_times(results)
    schedules = sorted({s for per in times.values() for s in per})

    def cell(v: list[float]) -> str:
        if not v:
            return ""
        m = sum(v) / len(v) / 60
        return f"{m:.1f}" if len(v) == 1 else f"{m:.1f} ({min(v) / 60:.1f}–{max(v) / 60:.1f})"

    return _table(["configuration", *[f"{s:g}x (min)" for s in schedules]],
                  [[k, *[cell(per.get(s, [])) for s in schedules]] for k, per in times.items()])


def last_statistics(metrics: str | Path, window: int = 10) -> dict[str, float]:
    """The mean of each logged training statistic (``"statistics"`` of ``metrics.jsonl``, e.g.
    GHM-C's non-empty bins and the share of its gradient on positives) over the last ``window``
    log records of a run."""
    records = [r["statistics"] for r in read_jsonl(metrics) if r.get("statistics")]
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    tail = records[-window:]
    keys = sorted({k for r in tail for k in r})
    return {k: sum(r[k] for r in tail if k in r) / sum(1 for r in tail if k in r) for k in keys}


def statistics_table(results: Results, window: int = 10) -> str:
    """The training statistics at the end of each run (:func:`last_statistics`), mean over
    seeds, per row that logs any."""
    rows, keys = [], set()
    found: dict[str, dict[str, float]] = {}
    for name in results.rows:
        per_seed = [last_statistics(r / "metrics.jsonl", window) for r in results.runs(name)
                    if (r / "metrics.jsonl").exists()]
        per_seed = [s for s in per_seed if s]
        if not per_seed:
            continue
        mean = {k: sum(s[k] for s in per_seed if k in s) / sum(1 for s in per_seed if k in s)
                for k in {k for s in per_seed for k in s}}
        found[name] = mean
        keys |= set(mean)
    ordered = sorted(keys)
    for name, mean in found.items():
        rows.append([name, *[f"{mean[k]:.3g}" if k in mean else "" for k in ordered]])
    return _table(["run", *ordered], rows)


def plot_ladder(results: Results, path: str | Path, metric: str = "AP") -> Path:
    """AP against the schedule length, one line per configuration: the mean over seeds with its
    95 % interval (a lone seed is a point without one), saved to ``path``."""
    points = ladder_points(results, metric)
    schedules = sorted({s for per in points.values() for s in per})
    series = {}
    for label, per in points.items():
        line: list[tuple[float, float, float] | None] = []
        for s in schedules:
            v = per.get(s, [])
            line.append(point_interval(v) if v else None)
        series[label] = line
    fig = Figure(figsize=(7, 4.5))  # off pyplot: no window, no global state
    ax = fig.subplots()
    plot_intervals(schedules, series, xlabel="schedule (multiple of the protocol's)",
                   ylabel=f"{metric} (points)", scale=100.0, logx=True, ax=ax)
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def report(sweeps: Results | None, ladders: Results, baseline: str | None = None,
           against: Sequence[str] | None = None, figure: str | Path | None = None) -> str:
    """The whole Markdown report (between :data:`BEGIN` and :data:`END`)."""
    parts = [BEGIN, "", "_Computed by `python -m imbalance.lab.report` from the kept runs; AP in "
             "points, 95 % t-intervals (Welch's on differences)._", ""]
    if sweeps is not None and sweeps.rows:
        parts += ["### Learning-rate sweep (1x)", "", sweep_table(sweeps), ""]
    parts += ["### Schedule ladder", "", ladder_table(ladders), ""]
    if figure is not None:
        parts += [f"![AP against the schedule length]({Path(figure).name})", ""]
    parts += ["### What doubling the schedule changes", "", doubling_table(ladders), ""]
    if baseline is not None:
        parts += [f"### Gaps to {baseline} at each schedule", "",
                  gap_table(ladders, baseline, against), ""]
    parts += ["### Wall time of a run (one thread)", "", wall_time_table(ladders), ""]
    stats = statistics_table(ladders)
    if stats.count("\n") > 1:
        parts += ["### Training statistics over the last 10 log records", "", stats, ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def write_between_markers(path: str | Path, text: str) -> Path:
    """Put ``text`` (which starts with :data:`BEGIN` and ends with :data:`END`) in place of the
    marked part of the file at ``path``, or at its end when it has none."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if BEGIN in old:
        head, rest = old.split(BEGIN, 1)
        if END not in rest:
            raise ValueError(f"{path} has {BEGIN!r} without {END!r}")
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + text
    return write_text_atomic(path, new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance.lab.report",
                                     description="Markdown tables (and a figure) of kept runs: "
                                                 "sweep, ladder, doublings, gaps, wall time.")
    parser.add_argument("--sweeps", nargs="*", default=[], help="learning-rate sweep folders")
    parser.add_argument("--ladders", nargs="+", required=True, help="schedule ladder folders")
    parser.add_argument("--baseline", help="the configuration the others are compared to")
    parser.add_argument("--against", nargs="+", help="compare only these configurations")
    parser.add_argument("--figure", help="write the ladder figure here (PNG)")
    parser.add_argument("--write", help="put the report in this file between its markers "
                                        "(default: print it)")
    args = parser.parse_args(argv)
    try:
        sweeps = collect(args.sweeps) if args.sweeps else None
        ladders = collect(args.ladders)
        if args.figure:
            plot_ladder(ladders, args.figure)
        text = report(sweeps, ladders, args.baseline, args.against, args.figure)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.write:
        print(f"wrote {write_between_markers(args.write, text)}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
