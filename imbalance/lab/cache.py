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
import sys
import time
from pathlib import Path

import torch

from imbalance import __version__
from imbalance.train import FitResult, RunLockedError, fit
from imbalance.train.checkpoint import load_checkpoint
from imbalance.train.config import TrainConfig, synthetic_cache_dir
from imbalance.train.rundir import RESUME_MAY_CHANGE

CACHE_ENV = "IMBALANCE_CACHE"
#: The repository's ``configs/`` folder (the YAML files of the chapters and the grids).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def cache_dir() -> Path:
    """``$IMBALANCE_CACHE``, or ``~/.cache/imbalance``."""
    # resolved: the chapters run from chapters/, `make book` from the repository's root
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "imbalance")).expanduser(
        ).resolve()


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


def library_fingerprint() -> str:
    """A hash of the library's source (every module of :mod:`imbalance` but the lab and the
    plots) and of torch's version: what a trained run depends on besides its settings."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("lab/") or relative == "plotting.py":
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


_FINGERPRINT = library_fingerprint()


def run_key(config: TrainConfig) -> str:
    """16 hex digits that change with every setting that changes a run's result, and with the
    code: a chapter never reads a run the current library would not have made.

    The settings a resumed run may change (:data:`~imbalance.train.rundir.RESUME_MAY_CHANGE`:
    threads, progress bars, checkpoint frequency...) are left out; the package version and
    :func:`library_fingerprint` are in.
    """
    values = config.to_dict()
    for dotted in RESUME_MAY_CHANGE:
        *parents, leaf = dotted.split(".")
        section = values
        for p in parents:
            section = section[p]
        section.pop(leaf, None)
    text = json.dumps([__version__, _FINGERPRINT, values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_run(kind: str, name: str, config: TrainConfig,
               cache: str | os.PathLike | None = None) -> Path:
    """The run folder of ``config`` in the cache: ``<cache>/<kind>/<name>-<run_key>``."""
    base = Path(cache) if cache is not None else cache_dir()
    return base / kind / f"{name}-{run_key(config)}"


def fit_cached(config: TrainConfig, out: str | os.PathLike, *,
               wait_s: float = 4 * 3600.0) -> FitResult:
    """``fit(config, out=out, resume=True)``, trained afresh where ``out``'s checkpoint cannot be
    read (a file cut short by a full disk, or written by an incompatible version).

    Another process training the same run (two chapters executed side by side need the same
    snapshot) holds the run's lock: this one waits for it, up to ``wait_s`` seconds, saying so
    once, and then reads the finished run back instead of training it twice.
    """
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return _fit_cached_once(config, out)
        except RunLockedError as e:
            if time.monotonic() > deadline:
                raise
            if not told:
                print(f"waiting for the run another process is training: {e}", file=sys.stderr,
                      flush=True)
                told = True
            time.sleep(1.0)


def _fit_cached_once(config: TrainConfig, out: str | os.PathLike) -> FitResult:
    last = Path(out) / "checkpoints" / "last.pt"
    if last.is_file():
        try:
            load_checkpoint(last)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError):
            return fit(config, out=out, overwrite=True)
    return fit(config, out=out, resume=True)
