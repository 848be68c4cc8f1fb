"""The lab's cache: the synthetic data, the snapshots and the chapter runs, keyed by their settings.

Everything lives under :func:`cache_dir`. A run is a :func:`imbalance.train.fit` run folder at
:func:`cached_run`, named by a hash of every setting that changes its result; :func:`fit_cached`
reads a finished one back, continues a killed one, and trains a missing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

from imbalance import __version__
from imbalance.train import FitResult, fit
from imbalance.train.checkpoint import load_checkpoint
from imbalance.train.config import TrainConfig, synthetic_cache_dir
from imbalance.train.rundir import RESUME_MAY_CHANGE

CACHE_ENV = "IMBALANCE_CACHE"
#: The repository's ``configs/`` folder (the YAML files of the chapters and the grids).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def cache_dir() -> Path:
    """``$IMBALANCE_CACHE``, or ``~/.cache/imbalance``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "imbalance"))


def use_cached_data(config: TrainConfig, cache: str | os.PathLike | None = None) -> TrainConfig:
    """Point ``config``'s synthetic benchmark at ``<cache>/synthetic/<name>``, in place.

    The one synthetic-data cache of the lab: snapshots, chapter runs and grids that ask for the
    same benchmark share its folder. A configuration that names a dataset (``data.root``) or a
    folder of its own (``data.cache_dir``) is left as it is. Returns ``config``.
    """
    if config.data.root is None and config.data.cache_dir is None:
        base = Path(cache) if cache is not None else cache_dir()
        config.data.cache_dir = str(base / synthetic_cache_dir(config).relative_to("data"))
    return config


def run_key(config: TrainConfig) -> str:
    """16 hex digits that change with every setting that changes a run's result.

    The settings a resumed run may change (:data:`~imbalance.train.rundir.RESUME_MAY_CHANGE`:
    threads, progress bars, checkpoint frequency...) are left out, and the package version is in,
    so a new release does not read back weights its models may no longer fit.
    """
    values = config.to_dict()
    for dotted in RESUME_MAY_CHANGE:
        *parents, leaf = dotted.split(".")
        section = values
        for p in parents:
            section = section[p]
        section.pop(leaf, None)
    text = json.dumps([__version__, values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_run(kind: str, name: str, config: TrainConfig,
               cache: str | os.PathLike | None = None) -> Path:
    """The run folder of ``config`` in the cache: ``<cache>/<kind>/<name>-<run_key>``."""
    base = Path(cache) if cache is not None else cache_dir()
    return base / kind / f"{name}-{run_key(config)}"


def fit_cached(config: TrainConfig, out: str | os.PathLike) -> FitResult:
    """``fit(config, out=out, resume=True)``, trained afresh where ``out``'s checkpoint cannot be
    read (a file cut short by a full disk, or written by an incompatible version)."""
    last = Path(out) / "checkpoints" / "last.pt"
    if last.is_file():
        try:
            load_checkpoint(last)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError):
            return fit(config, out=out, overwrite=True)
    return fit(config, out=out, resume=True)
