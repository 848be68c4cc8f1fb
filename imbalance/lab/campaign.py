"""Issue 14's campaign: every run of the protocol's grids, in order, shared between workers.

    python -m imbalance.lab.campaign run --until 21:30 &    # one worker per CPU core
    python -m imbalance.lab.campaign run --until 21:30
    python -m imbalance.lab.campaign status                 # what is kept, claimed, waiting

A campaign is an ordered list of plans (:data:`CAMPAIGN`). A plan is one configuration of a grid
(:data:`~imbalance.lab.experiments.GRIDS`): its learning-rate sweep (1x, seed 0, the factors
given; or the sweep of another configuration, as the outlier rows take their clean
configuration's rate) and its runs at the campaign's schedule (:data:`SCHEDULE`) and the sweep's
best factor, one per seed. Each run is a :class:`Job`.

A worker walks the jobs in order and takes the first one that is not kept, not claimed by a
live worker and not waiting for a sweep to finish. It claims it (an atomic ``mkdir`` under
``out/claims``; a claim whose worker has died is taken over) and trains it with
:func:`~imbalance.lab.experiments.run_grid`, so the run is resumable from its checkpoints, kept
under ``book/results/protocol/`` as it finishes (the files to commit), and copied instead of
trained when the same run is kept elsewhere (the pilot's runs, or the retinanet grid's for the
outlier grid at 0 %). Kept runs are never trained again: a campaign cut short in one session
resumes in the next from what was committed.

The first seed a worker trains of each configuration of :data:`KEEP_WEIGHTS` leaves its trained
detector in ``weights/protocol/`` (:mod:`imbalance.train.weights`: float16 weights with the
run's configuration and provenance), for the chapters that measure trained detectors.

``--until HH:MM`` keeps a worker from starting a job it cannot finish by then (the estimate is
the median wall time per 1x of the kept runs of the same model, times the job's schedule), so
no half-trained run dies with the session.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from imbalance.lab.experiments import (
    GRIDS,
    Experiment,
    kept_run,
    read_final,
    run_grid,
    variants,
)
from imbalance.train.weights import export_weights

ROOT = Path(__file__).resolve().parents[2]
#: Where the campaign keeps its runs: ``<grid>/`` the runs at the schedule, ``sweeps/<grid>/`` the
#: learning-rate sweeps.
RESULTS = ROOT / "book" / "results" / "protocol"
#: Kept runs of other result folders that the campaign copies instead of training again.
REUSE_GLOBS: tuple[str, ...] = ("book/results/pilot/*/lr_sweep", "book/results/pilot/*/ladder",
                                "book/results/protocol/*", "book/results/protocol/sweeps/*")
PRESET = "protocol"
#: The schedule of the grids' runs, a multiple of the protocol's 1x (1200 steps).
SCHEDULE = 4.0
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: The configurations whose trained detector the campaign ships (the first seed it trains, as
#: :mod:`imbalance.train.weights` files in :data:`WEIGHTS`): the concept chapters' detectors
#: (issue 15) and the GHM rows the training chapters diagnose.
KEEP_WEIGHTS: tuple[tuple[str, str], ...] = (
    ("retinanet", "FL + SL1"), ("retinanet", "CE (prior init) + SL1"),
    ("retinanet", "CE + OHEM"), ("retinanet", "GHM-C + SL1 (level)"),
    ("retinanet", "FL + GHM-R (level)"), ("libra", "Faster R-CNN (beta 1)"),
    ("libra", "+ Balanced Feature Pyramid"),
)
WEIGHTS = ROOT / "weights" / "protocol"
#: Minutes per 1x of a run (one thread, two runs side by side) before any run of the model is kept.
DEFAULT_MINUTES_PER_1X = {"retinanet_focal": 6.5, "libra_rcnn": 10.0}


@dataclass(frozen=True)
class Plan:
    """One configuration of a grid in the campaign.

    ``lr_factors`` are the factors of its own sweep; ``lr_of`` instead names the ``(grid,
    configuration)`` whose sweep sets its rate (no sweep of its own).
    """

    grid: str
    configuration: str
    lr_factors: tuple[float, ...] = ()
    lr_of: tuple[str, str] | None = None
    seeds: tuple[int, ...] = SEEDS

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}; expected one of {sorted(GRIDS)}")
        experiment(self.grid, self.configuration)
        if bool(self.lr_factors) == bool(self.lr_of):
            raise ValueError(f"{self.configuration}: give either lr_factors or lr_of")
        if self.lr_of is not None:
            experiment(*self.lr_of)

    @property
    def sweep(self) -> tuple[str, str]:
        """The ``(grid, configuration)`` whose sweep sets the rate."""
        return self.lr_of or (self.grid, self.configuration)


@dataclass(frozen=True)
class Job:
    """One run: a sweep's (``schedule`` 1, seed 0, its factor) or a grid's (``lr_factor`` None:
    the sweep's best, known once the sweep is kept)."""

    plan: Plan
    seed: int
    schedule: float
    lr_factor: float | None

    @property
    def is_sweep(self) -> bool:
        return self.lr_factor is not None

    @property
    def key(self) -> str:
        """A file-name-safe identifier (the claim's folder name)."""
        what = (f"sweep-lr{self.lr_factor:g}" if self.is_sweep
                else f"schedule{self.schedule:g}-seed{self.seed}")
        slug = experiment(self.plan.grid, self.plan.configuration).slug
        return f"{self.plan.grid}--{slug}--{what}"

    def __str__(self) -> str:
        what = (f"sweep at lr {self.lr_factor:g}x" if self.is_sweep
                else f"schedule {self.schedule:g}x, seed {self.seed}")
        return f"{self.plan.grid}: {self.plan.configuration}, {what}"


def experiment(grid: str, configuration: str) -> Experiment:
    """The configuration of a grid, by name or slug."""
    for e in GRIDS[grid]:
        if configuration in (e.name, e.slug):
            return e
    raise ValueError(f"grid {grid!r} has no configuration {configuration!r}")


def _p(grid: str, configuration: str, *factors: float,
       lr_of: tuple[str, str] | None = None) -> Plan:
    return Plan(grid, configuration, tuple(float(f) for f in factors), lr_of)


R, L = "retinanet", "libra"
#: The campaign, in the order the workers take it: the baselines and the pilot's configurations
#: (whose sweeps are kept: factors 1, 2, 4, 8), then the new configurations of each grid (swept
#: around their neighbours' best factors), then the outlier grid.
CAMPAIGN: tuple[Plan, ...] = (
    _p(R, "FL + SL1", 1, 2, 4, 8),
    _p(L, "Faster R-CNN (beta 1)", 1, 2, 4, 8),
    _p(R, "GHM-C + SL1 (level)", 1, 2, 4, 8),
    _p(R, "CE + OHEM", 1, 2, 4, 8),
    _p(R, "FL + GHM-R (level)", 1, 2, 4, 8),
    _p(R, "GHM-C + SL1 (batch)", 1, 2, 4, 8),
    _p(R, "alpha-CE + SL1", 2, 4, 8),
    _p(R, "CE (prior init) + SL1", 2, 4, 8),
    _p(R, "FL + Balanced L1", 2, 4, 8),
    _p(R, "GHM-C + GHM-R (level)", 1, 2, 4),
    _p(R, "GHM-C + Balanced L1 (level)", 1, 2, 4),
    _p(R, "GHM-C + GHM-R (batch)", 2, 4, 8),
    _p(L, "+ IoU-balanced sampling (paper)", 4, 8),
    _p(L, "+ IoU-balanced sampling (authors)", 4, 8),
    _p(L, "+ Balanced Feature Pyramid", 4, 8),
    _p(L, "+ Balanced L1", 4, 8),
    _p(L, "Libra R-CNN (all three)", 4, 8),
    *(_p("outliers", f"{label}, outliers {pct}%", lr_of=(R, clean))
      for pct in (0, 10, 20, 40)
      for label, clean in (("FL", "FL + SL1"), ("GHM-C", "GHM-C + SL1 (level)"))),
)


def weights_file(grid: str, configuration: str, weights: Path = WEIGHTS) -> Path:
    """Where the campaign ships a configuration's trained detector (:data:`KEEP_WEIGHTS`)."""
    return weights / f"{grid}-{experiment(grid, configuration).slug}.pt"


def sweep_folder(grid: str, results: Path = RESULTS) -> Path:
    return results / "sweeps" / grid


def grid_folder(grid: str, results: Path = RESULTS) -> Path:
    return results / grid


def _variant(grid: str, configuration: str, schedule: float, lr_factor: float) -> Experiment:
    (v,) = variants([experiment(grid, configuration)], (schedule,), (lr_factor,))
    return v


def sweep_results(plan: Plan, results: Path = RESULTS,
                  campaign: Sequence[Plan] = CAMPAIGN) -> dict[float, float | None]:
    """AP of each factor of the plan's sweep (``None``: not kept yet); a plan with ``lr_of``
    reads the sweep of that plan of ``campaign``."""
    grid, configuration = plan.sweep
    sweeping = next((p for p in campaign if (p.grid, p.configuration) == plan.sweep), None)
    factors = sweeping.lr_factors if sweeping is not None else plan.lr_factors
    out: dict[float, float | None] = {}
    for f in factors:
        final = read_final(kept_run(sweep_folder(grid, results),
                                    _variant(grid, configuration, 1.0, f), 0))
        out[f] = None if final is None else float(final["ap"]["AP"])
    return out


def best_lr_factor(plan: Plan, results: Path = RESULTS,
                   campaign: Sequence[Plan] = CAMPAIGN) -> float | None:
    """The factor of the sweep with the highest AP, or ``None`` while the sweep is unfinished."""
    aps = sweep_results(plan, results, campaign)
    if not aps or any(v is None for v in aps.values()):
        return None
    return max(aps, key=lambda f: (aps[f], -f))  # a tie goes to the smaller rate


def jobs(campaign: Sequence[Plan] = CAMPAIGN, schedule: float = SCHEDULE) -> Iterator[Job]:
    """Every job of the campaign, in order: each plan's sweep, then its seeds."""
    for plan in campaign:
        for f in plan.lr_factors:
            yield Job(plan, 0, 1.0, f)
        for seed in plan.seeds:
            yield Job(plan, seed, schedule, None)


def job_state(job: Job, results: Path = RESULTS,
              campaign: Sequence[Plan] = CAMPAIGN) -> tuple[str, Experiment | None]:
    """``("kept" | "ready" | "waiting", the run's variant)``; waiting: its sweep is unfinished."""
    if job.is_sweep:
        v = _variant(job.plan.grid, job.plan.configuration, 1.0, job.lr_factor)
        folder = sweep_folder(job.plan.grid, results)
    else:
        best = best_lr_factor(job.plan, results, campaign)
        if best is None:
            return "waiting", None
        v = _variant(job.plan.grid, job.plan.configuration, job.schedule, best)
        folder = grid_folder(job.plan.grid, results)
    kept = read_final(kept_run(folder, v, job.seed)) is not None
    return ("kept" if kept else "ready"), v


# ------------------------------------------------------------------------------ claims and time
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(claims: Path, job: Job) -> bool:
    """Claim ``job`` for this process: True when it is now ours. A claim left by a process of
    this machine that has died is taken over."""
    folder = claims / job.key
    claims.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        owner = (folder / "owner").read_text().split() if (folder / "owner").is_file() else []
        if (len(owner) == 2 and owner[0] == socket.gethostname() and owner[1].isdigit()
                and not _alive(int(owner[1]))):
            (folder / "owner").write_text(f"{socket.gethostname()} {os.getpid()}\n")
            return True
        return False
    (folder / "owner").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return True


def release(claims: Path, job: Job) -> None:
    folder = claims / job.key
    (folder / "owner").unlink(missing_ok=True)
    folder.rmdir()


def minutes_per_1x(results: Sequence[Path], preset: str = PRESET) -> dict[str, float]:
    """Median wall minutes per 1x of the kept ``preset`` runs under ``results``, per model config
    file."""
    per: dict[str, list[float]] = {}
    for folder in results:
        for final_file in folder.glob("runs/*/seed*/final.json"):
            final = read_final(final_file.parent) or {}
            config = final.get("config", {})
            schedule = config.get("optim", {}).get("schedule") or 1.0
            base = {"retinanet": "retinanet_focal"}.get(config.get("model", {}).get("name"),
                                                        config.get("model", {}).get("name"))
            if final.get("wall_time_s") and base and config.get("preset") == preset:
                per.setdefault(base, []).append(final["wall_time_s"] / 60 / schedule)
    return {**DEFAULT_MINUTES_PER_1X, **{b: statistics.median(v) for b, v in per.items()}}


def reuse_folders(root: Path = ROOT) -> list[Path]:
    return sorted({p for g in REUSE_GLOBS for p in root.glob(g)
                   if p.is_dir() and (p / "runs").is_dir()})


def _deadline(until: str | None) -> datetime | None:
    if until is None:
        return None
    hour, minute = (int(x) for x in until.split(":"))
    now = datetime.now()
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


# ---------------------------------------------------------------------------------- the worker
def work(out: Path, *, until: str | None = None, results: Path = RESULTS,
         campaign: Sequence[Plan] = CAMPAIGN, schedule: float = SCHEDULE,
         preset: str = PRESET, overrides: Sequence[str] = (),
         reuse: Sequence[Path] | None = None, weights: Path = WEIGHTS, poll_s: float = 60.0,
         log: Callable[[str], None] = print) -> int:
    """Take and train jobs until none is left that can start (see the module's docstring).

    Args:
        out: where the runs train (``out/<grid>/<configuration>/seed<k>``) and the claims are
            (``out/claims``).
        until: ``"HH:MM"``: start no job whose estimated time would end after it.
        results: where the runs are kept (:func:`grid_folder`, :func:`sweep_folder`).
        campaign, schedule, preset, overrides: what to run (``overrides`` go to every run).
        reuse: result folders whose kept runs are copied instead of trained; default
            :func:`reuse_folders`, looked up again before each job.
        weights: where the trained detectors of :data:`KEEP_WEIGHTS` are written.
        poll_s: seconds between looks while every job left waits for a sweep.
        log: where the worker says what it does.

    Returns:
        the number of jobs this worker trained or copied.
    """
    deadline = _deadline(until)
    claims = out / "claims"
    done = 0
    while True:
        folders = reuse_folders() if reuse is None else list(reuse)
        cost = minutes_per_1x(folders, preset)
        waiting = busy = False  # a job waits for a sweep; another worker holds a job
        taken = None
        for job in jobs(campaign, schedule):
            state, v = job_state(job, results, campaign)
            if state == "kept":
                continue
            if state == "waiting":
                waiting = True
                continue
            minutes = cost[experiment(job.plan.grid, job.plan.configuration).base] * job.schedule
            if deadline is not None and datetime.now() + timedelta(minutes=minutes) > deadline:
                continue
            if claim(claims, job):
                taken = (job, v, minutes)
                break
            busy = True
        if taken is None:
            if waiting and busy and (deadline is None or datetime.now() < deadline):
                time.sleep(poll_s)  # another worker may be finishing a sweep a job waits for
                continue
            log(f"[campaign] nothing more to start; {done} job(s) done by this worker")
            return done
        job, v, minutes = taken
        folder = (sweep_folder if job.is_sweep else grid_folder)(job.plan.grid, results)
        log(f"[campaign] {job} (about {minutes:.0f} min) -> {kept_run(folder, v, job.seed)}")
        try:
            run_grid(job.plan.grid, preset, [job.seed], out / job.plan.grid, results=folder,
                     only=[job.plan.configuration], overrides=overrides,
                     schedules=[v.schedule], lr_factors=[v.lr_factor], reuse=folders)
        finally:
            release(claims, job)
        done += 1
        wanted = (job.plan.grid, job.plan.configuration) in KEEP_WEIGHTS
        target = weights_file(job.plan.grid, job.plan.configuration, weights)
        trained = out / job.plan.grid / v.slug / f"seed{job.seed}"
        if wanted and not job.is_sweep and not target.exists() and (
                trained / "final.json").is_file():  # trained here, not copied: ship it
            export_weights(trained, target)
            log(f"[campaign] its trained detector: {target}")


def status(results: Path = RESULTS, campaign: Sequence[Plan] = CAMPAIGN,
           schedule: float = SCHEDULE, claims: Path | None = None) -> str:
    """One line per plan: its sweep (AP per factor, the best) and its runs kept, claimed,
    waiting."""
    lines = []
    for plan in campaign:
        aps = sweep_results(plan, results, campaign)
        sweep = ", ".join(f"{f:g}x {'…' if a is None else f'{100 * a:.1f}'}"
                          for f, a in aps.items())
        best = best_lr_factor(plan, results, campaign)
        states = [job_state(j, results, campaign)[0] for j in jobs([plan], schedule)
                  if not j.is_sweep]
        busy = (sum((claims / j.key).is_dir() for j in jobs([plan], schedule))
                if claims is not None else 0)
        lines.append(f"{plan.grid:>9} | {plan.configuration:<34} | sweep "
                     f"{'(of ' + plan.sweep[1] + ') ' if plan.lr_of else ''}{sweep}"
                     f"{'' if best is None else f' -> {best:g}x'} | {schedule:g}x kept "
                     f"{states.count('kept')}/{len(states)}"
                     f"{f', {busy} claimed' if busy else ''}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance.lab.campaign",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="work through the campaign (one worker per core)")
    run.add_argument("--until", metavar="HH:MM",
                     help="start no job that would not finish by then (local time)")
    run.add_argument("--out", default="runs/campaign",
                     help="where runs train (checkpoints; not committed)")
    run.add_argument("--poll", type=float, default=60.0,
                     help="seconds between looks while a job waits for another worker's sweep")
    st = sub.add_parser("status", help="what is kept, claimed and waiting")
    st.add_argument("--out", default="runs/campaign")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.until is not None:
            try:
                _deadline(args.until)
            except ValueError:
                parser.error(f"--until takes HH:MM, got {args.until!r}")
        # the worker's log says what it does; a progress bar per run would flood it
        work(Path(args.out), until=args.until, poll_s=args.poll,
             overrides=["run.progress=false"],
             log=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        print(status(claims=Path(args.out) / "claims"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
