"""The Markdown report of kept runs (imbalance.lab.report), on fake kept runs."""

from __future__ import annotations

import json

import pytest

from imbalance.lab import experiments, report
from imbalance.lab.statistics import mean_interval, welch_interval


def _kept(results, slug: str, seed: int, ap: float, wall: float = 600.0,
          statistics: list[dict] | None = None) -> None:
    folder = results / "runs" / slug / f"seed{seed}"
    folder.mkdir(parents=True)
    final = {"ap": {m: ap for m in experiments.METRICS}, "git_commit": "abc", "git_dirty": False,
             "device": "cpu", "versions": {"torch": "2.x"}, "date": "2026-12-03T10:00:00+00:00",
             "wall_time_s": wall, "command": "python -m imbalance.lab.experiments run"}
    (folder / "final.json").write_text(json.dumps(final))
    records = [{"step": 10 * (i + 1), "loss": 1.0, "statistics": s}
               for i, s in enumerate(statistics or [])]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


FL = {0.5: [0.40, 0.42, 0.44], 1: [0.50, 0.52, 0.54], 2: [0.560, 0.565, 0.570]}
GHM = {0.5: [0.20, 0.21, 0.22], 1: [0.40, 0.45, 0.50], 2: [0.55, 0.56, 0.57]}


@pytest.fixture()
def ladder(tmp_path):
    out = tmp_path / "ladder"
    for s, values in FL.items():
        tag = "" if s == 1 else f"_schedule_{s:g}x".replace(".", "_")
        for seed, ap in enumerate(values):
            _kept(out, f"fl_sl1{tag}_lr_4x", seed, ap, wall=300.0 * s * (1 + seed / 10))
    for s, values in GHM.items():
        tag = "" if s == 1 else f"_schedule_{s:g}x".replace(".", "_")
        for seed, ap in enumerate(values):
            stats = [{"ghm_c_bins": 10.0 + i, "ghm_c_positive_grad": 0.4} for i in range(12)]
            _kept(out, f"ghm_c_sl1_level{tag}_lr_2x", seed, ap, statistics=stats)
    experiments.summarize(out, grid="pilot", preset="protocol", seeds=[0, 1, 2],
                          schedules=[0.5, 1, 2], lr_factors=[2, 4])
    return out


def _row(table: str, first_cell: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no row {first_cell!r} in\n{table}")


def test_the_ladder_table_gives_each_mean_with_its_t_interval(ladder):
    results = report.collect([ladder])
    table = report.ladder_table(results)
    mean, low, high = mean_interval(FL[2])
    cells = _row(table, "FL + SL1 (lr 4x)")
    assert cells[2] == f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}] (3 seeds)"
    assert cells[0].startswith("42.0 [")
    assert _row(table, "GHM-C + SL1 (level) (lr 2x)")[1].startswith("45.0 [")


def test_doublings_are_welch_intervals_and_flag_the_converged_step(ladder):
    table = report.doubling_table(report.collect([ladder]))
    w = welch_interval(FL[2], FL[1])
    half_to_one, one_to_two = (r for r in table.splitlines() if r.startswith("| FL + SL1"))
    assert f"+{100 * w.difference:.1f} [{100 * w.low:+.1f}, {100 * w.high:+.1f}] " \
           f"{w.verdict}" in one_to_two
    assert one_to_two.rstrip(" |").endswith("no")  # +4.5 points is not converged
    assert "1x → 2x" in one_to_two and "0.5x → 1x" in half_to_one


def test_gaps_to_the_baseline_are_taken_at_each_schedule(ladder):
    results = report.collect([ladder])
    table = report.gap_table(results, "FL + SL1")
    cells = _row(table, "GHM-C + SL1 (level) (lr 2x)")
    assert cells[0].endswith("lower")  # 21 vs 42 points at 0.5x
    assert cells[1].endswith("inconclusive")  # 45 ± 5 vs 52 ± 2 at 1x
    w = welch_interval(GHM[2], FL[2])
    assert cells[2] == f"{100 * w.difference:+.1f} [{100 * w.low:+.1f}, {100 * w.high:+.1f}] " \
                       f"{w.verdict}"
    with pytest.raises(KeyError, match="SSD"):
        report.gap_table(results, "SSD")


def test_wall_times_and_training_statistics_come_from_the_run_files(ladder):
    results = report.collect([ladder])
    times = report.wall_times(results)["FL + SL1 (lr 4x)"]
    assert times[2.0] == pytest.approx([600.0, 660.0, 720.0])
    assert _row(report.wall_time_table(results), "FL + SL1 (lr 4x)")[2] == "11.0 (10.0–12.0)"
    run = results.runs("GHM-C + SL1 (level) [lr 2x]")[0]
    last = report.last_statistics(run / "metrics.jsonl", window=10)
    assert last["ghm_c_bins"] == pytest.approx(sum(range(12, 22)) / 10)
    assert last["ghm_c_positive_grad"] == pytest.approx(0.4)
    table = report.statistics_table(results)
    assert "| GHM-C + SL1 (level) [lr 2x] | 16.5 | 0.4 |" in table
    assert "FL + SL1 [lr 4x]" not in table  # logs no statistics
    with pytest.raises(ValueError, match="window"):
        report.last_statistics(run / "metrics.jsonl", window=0)


def test_the_sweep_marks_the_best_rate_and_whether_it_is_at_the_edge(tmp_path):
    out = tmp_path / "sweep"
    for slug, ap in {"fl_sl1": 0.5, "fl_sl1_lr_2x": 0.55, "fl_sl1_lr_4x": 0.54,
                     "ghm_c_sl1_level_lr_2x": 0.4, "ghm_c_sl1_level_lr_4x": 0.3}.items():
        _kept(out, slug, 0, ap)
    experiments.summarize(out, grid="pilot", preset="protocol", seeds=[0], lr_factors=[1, 2, 4])
    table = report.sweep_table(report.collect([out]))
    assert _row(table, "FL + SL1") == ["50.0", "**55.0**", "54.0", ""]
    assert _row(table, "GHM-C + SL1 (level)") == ["", "**40.0**", "30.0", "at the edge"]


def test_the_report_goes_between_its_markers_and_keeps_the_prose(ladder, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Pilot\n\nProse before.\n")
    figure = tmp_path / "ladder.png"
    assert report.main(["--ladders", str(ladder), "--baseline", "FL + SL1",
                        "--figure", str(figure), "--write", str(readme)]) == 0
    assert figure.stat().st_size > 1000
    first = readme.read_text()
    assert first.startswith("# Pilot\n\nProse before.\n") and first.count(report.BEGIN) == 1
    assert "![AP against the schedule length](ladder.png)" in first
    readme.write_text(first + "\nProse after.\n")
    assert report.main(["--ladders", str(ladder), "--write", str(readme)]) == 0
    second = readme.read_text()
    assert second.count(report.BEGIN) == 1 and second.endswith("\nProse after.\n")
    assert "Gaps to" not in second  # no baseline this time: the old tables were replaced
    assert report.main(["--ladders", str(tmp_path / "nothing")]) == 2


def test_a_row_kept_in_two_folders_must_be_the_same_runs(ladder, tmp_path):
    other = tmp_path / "other"
    _kept(other, "fl_sl1_lr_4x", 0, 0.5)
    experiments.summarize(other, grid="pilot", preset="protocol", seeds=[0], lr_factors=[4])
    with pytest.raises(ValueError, match="collect them from one folder"):
        report.collect([ladder, other])
