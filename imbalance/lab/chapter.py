"""The detectors the training chapters show: the preset a chapter uses, and its cached runs.

A chapter calls :func:`train_in_chapter`, which loads ``configs/<base>_<preset>.yaml`` (preset
from :func:`chapter_preset`: ``smoke`` in CI, ``cpu`` otherwise, on every device) and runs
:func:`imbalance.train.fit` into the lab's cache with ``resume=True``: a finished run of the same
configuration is read back in seconds, a killed one continues from its last checkpoint, and a
missing one is trained there and then. ``make book`` trains them all first
(``python -m imbalance.lab``), so no chapter trains inside a cell's timeout. A notebook writes
nothing next to itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from imbalance.lab.cache import CONFIGS, cached_run, fit_cached, use_cached_data
from imbalance.lab.experiments import read_summary
from imbalance.train import PRESETS, FitResult, TrainConfig, load_config

SMOKE_ENV = "IMBALANCE_SMOKE"
PRESET_ENV = "IMBALANCE_PRESET"
#: The configurations the training chapters train (``configs/<base>_<preset>.yaml``).
CHAPTER_RUNS: tuple[str, ...] = ("libra_rcnn", "retinanet_focal")  # the longest first
#: The presets a chapter picks by itself: bounded work on any device. ``gpu`` (hours) is for
#: the command line, or for ``$IMBALANCE_PRESET=gpu`` by choice.
CHAPTER_PRESETS: tuple[str, ...] = ("smoke", "cpu")


def chapter_preset(environ: Mapping[str, str] | None = None) -> str:
    """The preset a chapter trains with.

    ``$IMBALANCE_PRESET`` if set (one of :data:`~imbalance.train.PRESETS`); else ``smoke`` when
    ``$IMBALANCE_SMOKE`` is ``1`` (CI sets it); else ``cpu``, on a CUDA machine too (where it
    runs on the GPU, in a fraction of the time).

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    chosen = env.get(PRESET_ENV, "").strip()
    if chosen:
        if chosen not in PRESETS:
            raise ValueError(f"${PRESET_ENV}={chosen!r}: expected one of {sorted(PRESETS)}")
        return chosen
    return "smoke" if env.get(SMOKE_ENV, "").strip() == "1" else "cpu"


def chapter_config(base: str, preset: str | None = None, overrides: Sequence[str] = (), *,
                   cache: str | os.PathLike | None = None,
                   configs: str | os.PathLike = CONFIGS) -> TrainConfig:
    """``configs/<base>_<preset>.yaml`` with ``overrides``, its synthetic data under ``cache``.

    Args:
        base: the config file stem without the preset, e.g. ``"retinanet_focal"``.
        preset: default :func:`chapter_preset`.
        overrides: ``key=value`` settings, as on the command line.
        cache: the lab's cache (default :func:`imbalance.lab.cache.cache_dir`); see
            :func:`imbalance.lab.cache.use_cached_data`.
    """
    preset = preset or chapter_preset()
    path = Path(configs) / f"{base}_{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem.rsplit("_", 1)[0] for p in Path(configs).glob("*_smoke.yaml"))
        raise FileNotFoundError(f"{path} does not exist; the configurations are {known} "
                                f"with presets {sorted(PRESETS)}")
    return use_cached_data(load_config(path, list(overrides)), cache)


def chapter_run_dir(config: TrainConfig, cache: str | os.PathLike | None = None) -> Path:
    """Where the run of ``config`` lives in the cache: ``<cache>/runs/<name>-<key>``."""
    return cached_run("runs", config.name, config, cache)


def train_in_chapter(base: str, preset: str | None = None, overrides: Sequence[str] = (), *,
                     out: str | os.PathLike | None = None,
                     cache: str | os.PathLike | None = None,
                     progress: bool | None = None) -> FitResult:
    """The trained and evaluated ``configs/<base>_<preset>.yaml``, as a chapter shows it.

    Read back from the cache when a finished run of the same configuration is there (``make
    book`` trains them first); else trained (resuming a killed run), which takes minutes.

    Args:
        base, preset, overrides, cache: as :func:`chapter_config`.
        out: the run folder (default :func:`chapter_run_dir`).
        progress: show the training's progress bar (default: the configuration's setting).

    Returns:
        the :class:`~imbalance.train.FitResult`: metrics, AP dict, ``final.json``, the model.
    """
    config = chapter_config(base, preset, overrides, cache=cache)
    if progress is not None:
        config.run.progress = progress
    out = Path(out) if out is not None else chapter_run_dir(config, cache)
    return fit_cached(config, out)


def live_run_notice(preset: str, results: str | os.PathLike) -> str:
    """Markdown that a training chapter shows beside its live run: which preset trained it, and
    that the comparisons come from the committed grid under ``results`` (its ``summary.json``:
    preset, seeds, number of runs), not from the run on the page.

    With the ``smoke`` preset (CI builds the book with ``IMBALANCE_SMOKE=1``) it says that the run
    is a smoke run whose numbers mean nothing about the methods.
    """
    summary = read_summary(Path(results) / "summary.json")
    grid = (f"the committed `{summary['grid']}` grid (`book/results/{Path(results).name}/`: "
            f"{summary['provenance'].get('runs')} runs of the `{summary['preset']}` preset, "
            f"seeds {', '.join(map(str, summary['seeds']))}, each with its command, commit, "
            f"device and date)")
    if preset == "smoke":
        return (f"**A smoke run.** This page was built with `{SMOKE_ENV}=1`: the detector trained "
                f"on it uses the `smoke` preset (the tiny benchmark, a few dozen steps) to show "
                f"the pipeline at work, and its numbers say nothing about the methods. The "
                f"comparisons on this page are read from {grid}. Build without `{SMOKE_ENV}` "
                f"for the chapter's own `cpu` run.")
    return (f"The detector trained on this page uses the `{preset}` preset. The comparisons on "
            f"this page are read from {grid}, not from this run.")
