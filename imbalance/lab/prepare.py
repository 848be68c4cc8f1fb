"""``python -m imbalance.lab``: train what the chapters read into the cache, before they run.

The concept chapters read briefly trained detectors (:data:`~imbalance.lab.snapshot.
CHAPTER_SNAPSHOTS`), the training chapters one run of each :data:`~imbalance.lab.chapter.
CHAPTER_RUNS` with the chapter preset. Training them inside a notebook cell would race its
timeout on a loaded machine, so ``make book`` runs this first::

    python -m imbalance.lab [--preset cpu] [--jobs 2]

Each job is a resumable :func:`imbalance.train.fit` run in the cache: interrupted, this command
continues where it stopped; run again, it finds everything done in seconds. ``--jobs 2`` trains
two runs side by side, one CPU thread each (the fastest use of two cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from imbalance.lab.chapter import CHAPTER_RUNS, chapter_config, chapter_preset, train_in_chapter
from imbalance.lab.snapshot import (
    CHAPTER_DETECTORS,
    CHAPTER_SNAPSHOTS,
    briefly_trained,
    protocol_trained,
    snapshot_config,
)
from imbalance.train.data import ensure_synthetic


@dataclass(frozen=True)
class Job:
    """One run the chapters read: a snapshot (``kwargs`` of :func:`briefly_trained`) or a
    chapter run (``base`` of :func:`train_in_chapter`)."""

    name: str
    base: str | None = None
    preset: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def config(self) -> Any:
        if self.base is not None:
            return chapter_config(self.base, self.preset)
        return snapshot_config(**self.kwargs)

    def run(self, progress: bool) -> str:
        started = time.perf_counter()
        if self.base is not None:
            result = train_in_chapter(self.base, self.preset, progress=progress)
            what = f"AP {result.ap['AP']:.3f}"
        else:
            snap = briefly_trained(**self.kwargs, progress=progress)
            what = f"{len(snap.losses)} steps"
        return f"{self.name}: {what} ({time.perf_counter() - started:.0f} s)"


def chapter_jobs(preset: str | None = None) -> list[Job]:
    """Every run the chapters read, the longest first (chapter runs, then snapshots)."""
    preset = preset or chapter_preset()
    jobs = [Job(f"{base} ({preset})", base=base, preset=preset) for base in CHAPTER_RUNS]
    for kwargs in CHAPTER_SNAPSHOTS:
        extra = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "model")
        jobs.append(Job(f"snapshot {kwargs['model']}" + (f" ({extra})" if extra else ""),
                        kwargs=dict(kwargs)))
    return jobs


def _one_thread_job(job: Job) -> str:
    # A process started by "spawn" makes spawn its children's default too, and a DataLoader's
    # workers started that way fail to receive the tensors they are sent; fork them, as a run
    # started from the shell does.
    multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(1)
    return job.run(progress=False)


def prepare(preset: str | None = None, jobs: int = 1, progress: bool = True) -> list[str]:
    """Train (or find) every run of :func:`chapter_jobs` in the cache; one line per run.

    The synthetic benchmarks are generated first, once each (those of the shipped detectors of
    :data:`~imbalance.lab.snapshot.CHAPTER_DETECTORS` too); then the runs, ``jobs`` at a time
    in separate processes of one thread each (``jobs=1``: in this process, with torch's
    threads).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    todo = chapter_jobs(preset)
    folders = {}
    for job in todo:
        config = job.config()
        folders.setdefault(config.data.cache_dir, config)
    for config in folders.values():
        ensure_synthetic(config, progress=progress)
    for grid, configuration in CHAPTER_DETECTORS:  # shipped: their benchmarks only
        protocol_trained(grid, configuration, progress=progress)
    lines = []
    bar = tqdm(total=len(todo), desc="runs the chapters read", unit="run", disable=not progress)
    try:
        if jobs == 1:
            for job in todo:
                lines.append(job.run(progress))
                bar.write(lines[-1])
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")  # no forked OpenMP state
            with ProcessPoolExecutor(jobs, mp_context=context) as pool:
                for future in as_completed([pool.submit(_one_thread_job, j) for j in todo]):
                    lines.append(future.result())
                    bar.write(lines[-1])
                    bar.update(1)
    finally:
        bar.close()
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imbalance.lab",
        description="Train what the chapters read (snapshots, chapter runs) into the cache.")
    parser.add_argument("--preset", help="the chapter runs' preset (default: as the chapters "
                                         "pick it, from $IMBALANCE_PRESET / $IMBALANCE_SMOKE)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each")
    parser.add_argument("--list", action="store_true", help="list the runs and where they go")
    args = parser.parse_args(argv)
    if args.list:
        for job in chapter_jobs(args.preset):
            print(job.name)
        return 0
    started = time.perf_counter()
    prepare(args.preset, args.jobs, progress=sys.stderr.isatty())
    print(f"the chapters' runs are in the cache ({time.perf_counter() - started:.0f} s)",
          file=sys.stderr)
    return 0
