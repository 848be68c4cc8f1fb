"""The book's experiments: grids of training configurations x seeds, and their summaries.

    python -m imbalance.lab.experiments run --grid retinanet --preset cpu --seeds 0 1 2 \\
        --out runs/retinanet --results book/results/retinanet
    python -m imbalance.lab.experiments summarize --out book/results/retinanet

A grid (:data:`GRIDS`) names configurations, each a base YAML file of ``configs/`` (chosen by the
preset) plus ``key=value`` overrides. ``run`` trains every configuration with every seed in
``out/<configuration>/seed<k>/`` (checkpoints and all) through :func:`imbalance.train.fit` with
``resume=True``, so a killed run continues from its last checkpoint. Each finished run's small
text files (``config.yaml``, ``metrics.jsonl``, ``final.json``) are then kept in
``results/runs/<configuration>/seed<k>/``, the folder to commit as runs finish: a run kept there
is never trained again, so a grid interrupted in one session resumes in the next from what was
committed, whatever happened to ``out``. The summary is computed from the kept files only:
``results/summary.json`` and ``results/summary.csv``, per configuration the mean and standard
deviation over seeds of AP, AP50, AP75, APs, APm and APl, with the provenance of the runs
(command, git commit, device, library versions, dates, wall time).

``run --reuse <other grid's folder>`` copies a finished run whose configuration is the same
instead of training it again: the outliers grid at 0 % outliers is the retinanet grid's FL + SL1
and GHM-C + SL1.

``run --schedules 0.5 1 2`` trains each configuration at multiples of the preset's schedule (the
ladder, :func:`ladder`) and ``--lr-factors 0.5 1 2`` at multiples of its learning rate (the
sweep); :func:`variants` names them. :func:`compare` sets two configurations side by side with
Welch's 95 % t-interval (:mod:`imbalance.lab.statistics`). The ``pilot`` grid holds the
configurations whose convergence and wiring issue 12 measures (``book/results/pilot/run.sh``).

The seed changes the model's initialisation and the data order; the benchmark itself (its
``data.synthetic_seed``) is the same for every run, so the spread measures training noise only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from imbalance.evaluation import METRICS
from imbalance.files import read_jsonl, write_atomic, write_json_atomic, write_text_atomic
from imbalance.lab.cache import CONFIGS
from imbalance.lab.statistics import point_interval, verdict, welch_interval
from imbalance.models.backbones import file_sha256
from imbalance.train import PRESETS, TrainConfig, fit, load_config
from imbalance.train.config import config_differences
from imbalance.train.rundir import RESUME_MAY_CHANGE


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Experiment:
    """One configuration of a grid: a base config file stem and ``key=value`` overrides."""

    name: str
    base: str
    overrides: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """The folder name of the configuration."""
        return _slug(self.name)

    def _setting(self, key: str) -> float:
        values = [o.split("=", 1)[1] for o in self.overrides if o.startswith(f"{key}=")]
        return float(values[-1]) if values else 1.0

    @property
    def schedule(self) -> float:
        """The schedule multiple of the run (``optim.schedule``; 1 unless overridden)."""
        return self._setting("optim.schedule")

    @property
    def lr_factor(self) -> float:
        """The learning-rate factor of the run (``optim.lr_factor``; 1 unless overridden)."""
        return self._setting("optim.lr_factor")

    @property
    def configuration(self) -> str:
        """The name without the ladder's and the sweep's tag (``"FL + SL1 [lr 2x]"`` →
        ``"FL + SL1"``)."""
        return self.name.split(" [", 1)[0]

    def config_file(self, preset: str, configs: Path = CONFIGS) -> Path:
        return configs / f"{self.base}_{preset}.yaml"


def _retinanet() -> list[Experiment]:
    # issue 14's RetinaNet grid under the protocol: the GHM rows name their wiring (``level``, the
    # authors' head, or ``batch``); a row shared with the pilot has the pilot's name and overrides,
    # so the pilot's kept runs of it are copied (``run --reuse``), not trained again
    def r(name: str, cls: str, box: str, *extra: str) -> Experiment:
        return Experiment(name, "retinanet_focal",
                          (f"model.cls_loss={cls}", f"model.box_loss={box}", *extra))

    level, batch = "model.options.ghm_scope=level", "model.options.ghm_scope=batch"
    return [
        r("CE (prior init) + SL1", "ce", "smooth_l1"),
        r("alpha-CE + SL1", "alpha_ce", "smooth_l1"),
        r("FL + SL1", "focal", "smooth_l1"),
        r("GHM-C + SL1 (level)", "ghm_c", "smooth_l1", level),
        r("GHM-C + SL1 (batch)", "ghm_c", "smooth_l1", batch),
        r("FL + GHM-R (level)", "focal", "ghm_r", level),
        r("FL + Balanced L1", "focal", "balanced_l1"),
        r("GHM-C + GHM-R (level)", "ghm_c", "ghm_r", level),
        r("GHM-C + Balanced L1 (level)", "ghm_c", "balanced_l1", level),
        r("GHM-C + GHM-R (batch)", "ghm_c", "ghm_r", batch),
        # the Focal Loss paper's baseline: cross-entropy on OHEM's minibatch (imbalance.ohem,
        # the paper's best setting: 128 anchors per image, NMS 0.5, no ratio)
        r("CE + OHEM", "ce", "smooth_l1", "model.options.ohem.batch_size=128"),
    ]


def _libra() -> list[Experiment]:
    # issue 14's Libra ablation; IoU-balanced sampling both as the paper describes it (bins over
    # the negatives' own IoU range, every negative binned: the model's default, also in "all
    # three") and as the authors' released sampler behaves (bins over [0, 1], the top one empty;
    # IoU == 0 negatives in a floor pool)
    def lib(name: str, iou: bool, bfp: bool, bl1: bool, *extra: str) -> Experiment:
        flags = (f"model.iou_balanced={str(iou).lower()}", f"model.bfp={str(bfp).lower()}",
                 f"model.balanced_l1={str(bl1).lower()}")
        return Experiment(name, "libra_rcnn", (*flags, *extra))

    return [
        lib("Faster R-CNN (beta 1)", False, False, False),
        lib("+ IoU-balanced sampling (paper)", True, False, False),
        lib("+ IoU-balanced sampling (authors)", True, False, False,
            "model.options.binning=authors", "model.options.floor_thr=0"),
        lib("+ Balanced Feature Pyramid", False, True, False),
        lib("+ Balanced L1", False, False, True),
        lib("Libra R-CNN (all three)", True, True, True),
    ]


OUTLIER_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4)


def _outliers() -> list[Experiment]:
    # 0 % is the benchmark as it is: no knob, so these runs are the retinanet grid's FL + SL1
    # and GHM-C + SL1 (level), and ``run --reuse`` copies them instead of training
    methods = (("FL", ("model.cls_loss=focal",)),
               ("GHM-C", ("model.cls_loss=ghm_c", "model.options.ghm_scope=level")))
    return [
        Experiment(f"{label}, outliers {round(100 * f)}%", "retinanet_focal",
                   (*cls, "model.box_loss=smooth_l1",
                    *([f"data.knobs.outlier_fraction={f}"] if f else [])))
        for f in OUTLIER_FRACTIONS for label, cls in methods
    ]


def _pilot() -> list[Experiment]:
    # issue 12's pilot: the baselines whose convergence the protocol must show, GHM in both
    # wirings, and Libra R-CNN (for the learning-rate sweep)
    def r(name: str, cls: str, box: str, scope: str) -> Experiment:
        return Experiment(name, "retinanet_focal", (f"model.cls_loss={cls}",
                                                    f"model.box_loss={box}",
                                                    f"model.options.ghm_scope={scope}"))

    off = ("model.iou_balanced=false", "model.bfp=false", "model.balanced_l1=false")
    return [
        Experiment("FL + SL1", "retinanet_focal",
                   ("model.cls_loss=focal", "model.box_loss=smooth_l1")),
        Experiment("Faster R-CNN (beta 1)", "libra_rcnn", off),
        r("GHM-C + SL1 (level)", "ghm_c", "smooth_l1", "level"),
        r("GHM-C + SL1 (batch)", "ghm_c", "smooth_l1", "batch"),
        r("FL + GHM-R (level)", "focal", "ghm_r", "level"),
        r("FL + GHM-R (batch)", "focal", "ghm_r", "batch"),
        Experiment("Libra R-CNN (all three)", "libra_rcnn",
                   ("model.iou_balanced=true", "model.bfp=true", "model.balanced_l1=true")),
        Experiment("CE + OHEM", "retinanet_focal",
                   ("model.cls_loss=ce", "model.box_loss=smooth_l1",
                    "model.options.ohem.batch_size=128")),
    ]


GRIDS: dict[str, list[Experiment]] = {
    "retinanet": _retinanet(), "libra": _libra(), "outliers": _outliers(), "pilot": _pilot(),
}


def variants(experiments: Sequence[Experiment], schedules: Sequence[float] = (1.0,),
             lr_factors: Sequence[float] = (1.0,)) -> list[Experiment]:
    """Each experiment at each schedule length (``optim.schedule``: the ladder) and learning-rate
    factor (``optim.lr_factor``: the sweep). The 1x variants keep the experiment's own name;
    the others are named e.g. ``"FL + SL1 [schedule 0.5x]"`` or ``"FL + SL1 [lr 2x]"``."""
    for values, what in ((schedules, "schedules"), (lr_factors, "lr_factors")):
        if not values or len(set(values)) != len(values) or any(
                not (isinstance(v, int | float) and math.isfinite(v) and v > 0) for v in values):
            raise ValueError(f"{what} must be distinct positive numbers, got {list(values)}")
    out = []
    for e in experiments:
        for schedule in schedules:
            for factor in lr_factors:
                tags, extra = [], []
                if schedule != 1:
                    tags.append(f"schedule {schedule:g}x")
                    extra.append(f"optim.schedule={schedule:g}")
                if factor != 1:
                    tags.append(f"lr {factor:g}x")
                    extra.append(f"optim.lr_factor={factor:g}")
                name = f"{e.name} [{', '.join(tags)}]" if tags else e.name
                out.append(Experiment(name, e.base, (*e.overrides, *extra)))
    return out


def grid_presets(configs: Path = CONFIGS) -> tuple[str, ...]:
    """The training presets (:data:`imbalance.train.PRESETS`) every grid has config files for."""
    bases = {e.base for grid in GRIDS.values() for e in grid}
    return tuple(p for p in PRESETS if all((configs / f"{b}_{p}.yaml").is_file() for b in bases))


def _check(grid: str, preset: str, seeds: Sequence[int], configs: Path) -> list[Experiment]:
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {sorted(GRIDS)}")
    if preset not in grid_presets(configs):
        raise ValueError(f"unknown preset {preset!r}; expected one of {grid_presets(configs)}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    missing = [str(e.config_file(preset, configs)) for e in GRIDS[grid]
               if not e.config_file(preset, configs).exists()]
    if missing:
        raise FileNotFoundError(f"missing config file(s): {sorted(set(missing))}")
    return GRIDS[grid]


#: The files of a finished run that a grid keeps (and the repository commits); ``final.json``
#: last, so a copy cut short is made again.
KEPT_FILES: tuple[str, ...] = ("config.yaml", "metrics.jsonl", "final.json")


def kept_run(results: str | os.PathLike, experiment: Experiment | str, seed: int) -> Path:
    """Where a grid keeps the files of one finished run: ``results/runs/<slug>/seed<k>``, for an
    experiment or a configuration's name in a summary (e.g. ``"FL + SL1 [lr 2x]"``)."""
    slug = experiment.slug if isinstance(experiment, Experiment) else _slug(experiment)
    return Path(results) / "runs" / slug / f"seed{seed}"


def read_final(run: str | os.PathLike) -> dict[str, Any] | None:
    """The ``final.json`` of a (kept) run folder, or ``None`` when the run has none (it did not
    finish)."""
    path = Path(run) / "final.json"
    return _read_json(path) if path.is_file() else None


def keep_run(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the :data:`KEPT_FILES` of the finished run in ``source`` to ``target``."""
    source, target = Path(source), Path(target)
    if not (source / "final.json").is_file():
        raise FileNotFoundError(f"{source} holds no finished run (no final.json)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "final.json").unlink(missing_ok=True)
    for name in KEPT_FILES:
        if (source / name).is_file():
            write_atomic(target / name, lambda f, name=name: f.write((source / name).read_bytes()),
                         binary=True)
    return target


def find_same_run(config: TrainConfig, reuse: Sequence[str | os.PathLike]) -> Path | None:
    """A finished run kept under one of the ``reuse`` grids' result folders
    (``runs/<configuration>/seed<k>/``) whose ``config.yaml`` equals ``config`` (up to the settings
    a resumed run may change, such as the thread count), or None."""
    for folder in reuse:
        for final in sorted(Path(folder).glob("runs/*/seed*/final.json")):
            if (final.parent / "config.yaml").is_file() and not _differences(final.parent,
                                                                             config):
                return final.parent
    return None


def _differences(run: Path, config: TrainConfig) -> list[str]:
    """How the configuration saved in ``run/config.yaml`` differs from ``config`` (up to the
    settings a resumed run may change); a missing file differs in everything."""
    saved_file = run / "config.yaml"
    if not saved_file.is_file():
        return [f"{saved_file} is missing"]
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    # read through the dataclasses: a field added since the run was kept takes its default
    saved = TrainConfig.from_dict(saved).to_dict()
    differences = config_differences(saved, config.to_dict(), ignore=RESUME_MAY_CHANGE)
    weights = config.model.pretrained
    if weights is not None and (run / "final.json").is_file() and Path(weights).is_file():
        # the same file name with other weights in it is another run
        kept = json.loads((run / "final.json").read_text(encoding="utf-8"))
        if kept.get("pretrained_sha256") not in (None, file_sha256(weights)):
            differences.append("model.pretrained (the weight file has changed)")
    return differences


def run_grid(grid: str, preset: str, seeds: Sequence[int], out: str | os.PathLike, *,
             results: str | os.PathLike | None = None,
             only: Sequence[str] | None = None, overrides: Sequence[str] = (),
             reuse: Sequence[str | os.PathLike] = (),
             schedules: Sequence[float] = (1.0,), lr_factors: Sequence[float] = (1.0,),
             configs: Path = CONFIGS) -> dict[str, Any]:
    """Train every configuration of ``grid`` with every seed (resumably), then summarise.

    Args:
        grid: a key of :data:`GRIDS`.
        preset: ``smoke``, ``cpu`` or ``gpu``: picks ``configs/<base>_<preset>.yaml``.
        seeds: the seeds (``run.seed``).
        out: where the runs train (checkpoints included).
        results: where each finished run's files are kept (:func:`kept_run`) and the summary
            written; default ``out``. A run kept there is not trained again.
        only: run only the configurations with these names or slugs.
        overrides: extra ``key=value`` overrides for every run (e.g. ``optim.iterations=50``).
        reuse: result folders of other grids; a run not yet kept here whose configuration equals
            a run kept there (:func:`find_same_run`) is copied from it, not trained again.
        schedules, lr_factors: run each configuration at these schedule lengths and learning
            rate factors (:func:`variants`: the ladder and the sweep).
        configs: the folder of the YAML files.

    Returns:
        the summary (also written to ``results/summary.json`` and ``results/summary.csv``).
    """
    experiments = _check(grid, preset, seeds, configs)
    if only:
        unknown = {o for o in only if _slug(o) not in {e.slug for e in experiments}}
        only = [_slug(o) for o in only]
        if unknown:
            hint = ("; key=value overrides go before --only, which takes every word after it"
                    if any("=" in u for u in unknown) else "")
            raise ValueError(f"unknown configuration(s) {sorted(unknown)} in grid {grid!r}{hint}")
        experiments = [e for e in experiments if e.slug in only]
    experiments = variants(experiments, schedules, lr_factors)
    out = Path(out)
    results = Path(results) if results is not None else out
    for e in experiments:
        for seed in seeds:
            kept = kept_run(results, e, seed)
            config = load_config(e.config_file(preset, configs),
                                 [*e.overrides, *overrides, f"run.seed={seed}"])
            if (kept / "final.json").is_file():
                differences = _differences(kept, config)
                if differences:
                    raise ValueError(f"{kept} keeps a run of another configuration "
                                     f"({'; '.join(differences[:3])}); move it away, or run "
                                     f"with its settings")
                print(f"[{grid}] {e.name}, seed {seed}: kept in {kept}", file=sys.stderr,
                      flush=True)
                continue
            same = find_same_run(config, reuse)
            if same is not None:
                print(f"[{grid}] {e.name}, seed {seed}: the same run is kept in {same}; copied",
                      file=sys.stderr, flush=True)
                keep_run(same, kept)
                continue
            print(f"[{grid}] {e.name}, seed {seed}", file=sys.stderr, flush=True)
            result = fit(config, out=out / e.slug / f"seed{seed}", resume=True)
            keep_run(result.out, kept)
    return summarize(results, grid=grid, preset=preset, seeds=seeds, configs=configs,
                     schedules=schedules, lr_factors=lr_factors)


def _stats(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "values": values}
    mean = sum(finite) / len(finite)
    std = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
           if len(finite) > 1 else 0.0)
    return {"mean": mean, "std": std, "values": values}


def summarize(out: str | os.PathLike, *, grid: str | None = None, preset: str | None = None,
              seeds: Sequence[int] | None = None, configs: Path = CONFIGS,
              force: bool = False, schedules: Sequence[float] | None = None,
              lr_factors: Sequence[float] | None = None) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of every run kept under ``out``.

    Reads ``out/runs/<configuration>/seed<k>/final.json`` (:func:`kept_run`); writes
    ``out/summary.json`` and ``out/summary.csv`` (rows in the grid's order) and returns the
    summary. Runs that have not finished are left out and listed under ``"missing"``. The seeds,
    schedules and learning-rate factors are those of the existing summary and the ones given.
    """
    out = Path(out)
    meta = _read_json(out / "summary.json") if (out / "summary.json").exists() else {}
    grid = grid or meta.get("grid")
    preset = preset or meta.get("preset")
    # a summary covers every seed, schedule and rate it covered before and the ones given, so
    # grids run a seed or a schedule at a time add up instead of replacing each other
    seeds = sorted({*meta.get("seeds", []), *(seeds or [])})
    schedules = sorted({*meta.get("schedules", []), *(schedules or [])} or {1.0})
    lr_factors = sorted({*meta.get("lr_factors", []), *(lr_factors or [])} or {1.0})
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; give --grid (one of {sorted(GRIDS)})")
    rows: dict[str, Any] = {}
    runs, missing = [], []
    for e in variants(GRIDS[grid], schedules, lr_factors):
        finals = []
        for seed in seeds:
            path = kept_run(out, e, seed) / "final.json"
            if path.exists():
                finals.append((seed, _read_json(path)))
            elif path.parent.parent.exists():
                missing.append(f"{e.slug}/seed{seed}")
        if not finals:
            continue
        rows[e.name] = {m: _stats([f["ap"].get(m) for _, f in finals]) for m in METRICS}
        rows[e.name]["seeds"] = [s for s, _ in finals]
        rows[e.name]["overrides"] = list(e.overrides)
        rows[e.name].update(configuration=e.configuration, schedule=e.schedule,
                            lr_factor=e.lr_factor)
        runs += [_provenance(f) for _, f in finals]
    lost = sorted(set(meta.get("rows", {})) - set(rows))
    if lost and not force:
        raise ValueError(f"{out / 'summary.json'} has rows that no kept run under "
                         f"{out / 'runs'} supports: {lost}; rewriting it would drop them "
                         f"(summaries made before the kept-run layout have no runs/ folder). "
                         f"Pass force=True (--force) to rewrite it anyway")
    summary = {
        "grid": grid, "preset": preset, "seeds": seeds, "schedules": schedules,
        "lr_factors": lr_factors, "metrics": list(METRICS), "rows": rows,
        "missing": missing,
        "provenance": {
            "command": " ".join(["python -m imbalance.lab.experiments", *sys.argv[1:]])
            if sys.argv and sys.argv[0].endswith("experiments.py") else None,
            "commits": sorted({r["commit"] for r in runs if r["commit"]}),
            "devices": sorted({r["device"] for r in runs if r["device"]}),
            "versions": runs[0]["versions"] if runs else None,
            "dates": [min(r["date"] for r in runs), max(r["date"] for r in runs)] if runs else [],
            "run_commands": sorted({_python_m(r["command"]) for r in runs if r["command"]}),
            "wall_time_s": sum(r["wall_time_s"] or 0 for r in runs),
            "runs": len(runs),
            "summarized": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    write_json_atomic(out / "summary.json", summary, indent=1)
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["configuration", "seeds", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]])
    for name, row in rows.items():
        w.writerow([name, len(row["seeds"]),
                    *[_fmt(row[m][s]) for m in METRICS for s in ("mean", "std")]])
    write_text_atomic(out / "summary.csv", table.getvalue())
    return summary


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A grid's ``summary.json`` (a file, or the folder holding it), checked for its fields.

    Raises:
        FileNotFoundError: no summary there; the message gives the command that makes one.
        ValueError: the file is not a grid summary.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; make it with `python -m "
                                f"imbalance.lab.experiments run --grid <grid> --preset <preset> "
                                f"--out {path.parent}`")
    try:
        summary = _read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    missing = {"grid", "preset", "seeds", "rows", "provenance"} - set(summary)
    if missing:
        raise ValueError(f"{path} is not a grid summary: {sorted(missing)} missing")
    return summary


def summary_table(summary: dict[str, Any], metrics: Sequence[str] = METRICS,
                  scale: float = 100.0) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Configuration → metric → (mean, std), times ``scale`` (COCO's points by default), in the
    grid's order; what :func:`imbalance.plotting.plot_results_table` takes."""
    table = {}
    for name, row in summary["rows"].items():
        table[name] = {m: None if row[m]["mean"] is None else
                       (scale * row[m]["mean"], scale * row[m]["std"]) for m in metrics}
    return table


@dataclass(frozen=True)
class Comparison:
    """Configuration ``a`` against ``b`` on one metric, over seeds: Welch's 95 % t-interval on
    the difference of the means (:func:`imbalance.lab.statistics.welch_interval`).

    Attributes:
        difference: mean of ``a`` minus mean of ``b``.
        stderr: the standard error of that difference, sqrt(s_a²/n_a + s_b²/n_b).
        df: Welch-Satterthwaite's degrees of freedom.
        low, high: the 95 % interval.
    """

    a: str
    b: str
    metric: str
    difference: float
    stderr: float
    df: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``"higher"`` or ``"lower"`` when the 95 % interval excludes 0, else
        ``"inconclusive"`` (:func:`imbalance.lab.statistics.verdict`)."""
        return verdict(self.low, self.high)

    def __str__(self) -> str:
        return (f"{self.a} vs {self.b}: {self.metric} {100 * self.difference:+.1f} points, 95 % "
                f"interval [{100 * self.low:+.1f}, {100 * self.high:+.1f}] ({self.verdict})")


def compare(summary: dict[str, Any], a: str, b: str, metric: str = "AP") -> Comparison:
    """Compare two configurations of a grid summary on ``metric`` (see :class:`Comparison`).

    Needs at least two seeds of each: with one seed the noise cannot be told.
    """
    rows = summary["rows"]
    for name in (a, b):
        if name not in rows:
            raise KeyError(f"{name!r} is not in the summary; it has {list(rows)}")
    va, vb = ([v for v in rows[n][metric]["values"] if v is not None and math.isfinite(v)]
              for n in (a, b))
    if len(va) < 2 or len(vb) < 2:
        raise ValueError(f"compare needs two seeds or more of each; {a!r} has {len(va)}, "
                         f"{b!r} has {len(vb)}")
    w = welch_interval(va, vb)
    return Comparison(a, b, metric, w.difference, w.stderr, w.df, w.low, w.high)


def ladder(summary: dict[str, Any], metric: str = "AP", level: float = 0.95
           ) -> dict[str, dict[float, tuple[float, float, float]]]:
    """A summary's schedule ladder: configuration → schedule multiple → (mean, low, high) of
    ``metric`` over seeds, the t-interval of the mean at ``level`` (low = high = mean with one
    seed). Rows without a ``schedule`` (older summaries) count as 1x."""
    out: dict[str, dict[float, tuple[float, float, float]]] = {}
    for name, row in summary["rows"].items():
        values = [v for v in row[metric]["values"] if v is not None and math.isfinite(v)]
        if not values:
            continue
        family = row.get("configuration", name.split(" [", 1)[0])
        out.setdefault(family, {})[float(row.get("schedule", 1.0))] = point_interval(values, level)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def learning_curves(results: str | os.PathLike, name: str, metric: str = "AP",
                    level: float = 0.95) -> dict[int, tuple[float, float, float]]:
    """The learning curve of one configuration (its name in the summary, e.g. ``"FL + SL1 [lr
    2x]"``) from the evaluations its kept runs logged (``run.eval_every``): step → (mean, low,
    high) of ``metric`` over the seeds evaluated at that step, the t-interval of the mean at
    ``level`` (low = high = mean for one seed)."""
    folder = kept_run(results, name, 0).parent
    runs = sorted(folder.glob("seed*/metrics.jsonl"))
    if not runs:
        raise FileNotFoundError(f"no kept runs of {name!r} under {folder}")
    by_step: dict[int, list[float]] = {}
    for path in runs:
        for record in read_jsonl(path):
            value = record.get(metric) if "eval" in record else None
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(record["step"]), []).append(float(value))
    return {step: point_interval(v, level) for step, v in sorted(by_step.items())}


def describe_provenance(summary: dict[str, Any]) -> str:
    """One paragraph that says where a summary's numbers come from."""
    p = summary["provenance"]
    versions = p.get("versions") or {}
    lib = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    dates = p.get("dates") or []
    when = f"{dates[0][:10]} to {dates[-1][:10]}" if dates else "unknown dates"
    commits = ", ".join(c[:10] + ("-dirty" if c.endswith("-dirty") else "")
                        for c in p.get("commits") or ["?"])
    return (f"grid {summary['grid']!r}, preset {summary['preset']!r}, seeds {summary['seeds']}: "
            f"{p.get('runs')} runs, {p.get('wall_time_s', 0) / 3600:.1f} h of training in all, "
            f"on {', '.join(p.get('devices') or ['?'])}, {when}; commit(s) {commits}; "
            f"{lib}. Command(s): {'; '.join(p.get('run_commands') or [p.get('command') or '?'])}")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _provenance(final: dict[str, Any]) -> dict[str, Any]:
    commit = final.get("git_commit")
    if commit and final.get("git_dirty"):
        commit += "-dirty"
    return {"commit": commit, "device": final.get("device"), "versions": final.get("versions"),
            "date": final.get("date") or "", "wall_time_s": final.get("wall_time_s"),
            "command": final.get("command")}


def _python_m(command: str) -> str:
    """A command line with the interpreter's path shortened to ``python``."""
    head, sep, tail = command.partition(" -m ")
    return f"python -m {tail}" if sep and "python" in head.rsplit("/", 1)[-1] else command


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


def _move_overrides(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """``--only`` and ``--reuse`` take every word after them, so ``key=value`` overrides written
    after them land there; move those (a dotted key, then ``=``) back to the overrides, in the
    order of the command line (a later override wins)."""
    moved = []
    for name in ("only", "reuse"):
        values = getattr(args, name) or []
        moved += [v for v in values if _OVERRIDE.match(v)]
        kept = [v for v in values if not _OVERRIDE.match(v)]
        if values and not kept:
            raise ValueError(f"--{name} is followed by overrides only: {values}")
        setattr(args, name, kept or None)
    if moved:
        words = list(argv)
        args.overrides = sorted([*args.overrides, *moved], key=words.index)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance.lab.experiments",
                                     description="Run and summarise the book's experiment grids.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a grid x seeds (resumable), then summarise")
    run.add_argument("--grid", required=True, choices=sorted(GRIDS))
    run.add_argument("--preset", required=True, choices=grid_presets())
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--out", required=True, help="where the runs train (checkpoints)")
    run.add_argument("--results", help="where finished runs are kept and the summary written "
                                       "(default: --out), e.g. book/results/<grid>")
    run.add_argument("--only", nargs="+", help="configuration names or slugs")
    run.add_argument("--reuse", nargs="+", default=[],
                     help="other grids' result folders: copy their kept runs of the same config")
    run.add_argument("--schedules", type=float, nargs="+", default=[1.0],
                     help="schedule lengths, multiples of the preset's (the ladder: 0.25 0.5 1 2)")
    run.add_argument("--lr-factors", type=float, nargs="+", default=[1.0],
                     help="learning-rate factors of the scaled rate (the sweep: 0.5 1 2)")
    run.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    summ = sub.add_parser("summarize", help="(re)write the summary of finished runs")
    summ.add_argument("--out", required=True, help="the grid's result folder")
    summ.add_argument("--grid", choices=sorted(GRIDS))
    summ.add_argument("--preset", choices=grid_presets())
    summ.add_argument("--seeds", type=int, nargs="+")
    summ.add_argument("--force", action="store_true",
                      help="rewrite even if rows of the existing summary would be dropped")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "run":
            _move_overrides(args, sys.argv[1:] if argv is None else argv)
            s = run_grid(args.grid, args.preset, args.seeds, args.out, results=args.results,
                         only=args.only, overrides=args.overrides, reuse=args.reuse or (),
                         schedules=args.schedules, lr_factors=args.lr_factors)
        else:
            s = summarize(args.out, grid=args.grid, preset=args.preset, seeds=args.seeds,
                          force=args.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, row in s["rows"].items():
        print(f"{name:32s} AP {row['AP']['mean']:.3f} ± {row['AP']['std']:.3f}  "
              f"AP50 {row['AP50']['mean']:.3f} ± {row['AP50']['std']:.3f}  (n={len(row['seeds'])})")
    print(f"{len(s['rows'])} configurations in {time.perf_counter() - started:.0f} s; "
          f"{Path(getattr(args, 'results', None) or args.out) / 'summary.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
