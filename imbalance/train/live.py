"""Training a detector inside a chapter: the preset the machine affords, files out of the way.

The training chapters call :func:`train_in_chapter`, which picks the preset with
:func:`chapter_preset` (``smoke`` in CI, ``gpu`` on a CUDA machine, ``cpu`` otherwise), loads
``configs/<base>_<preset>.yaml`` and runs :func:`imbalance.train.fit` with the synthetic data
and the run folder under :func:`imbalance.snapshot.cache_dir`, so a notebook writes nothing
next to itself. A chapter trains afresh each time it runs: the run folder is overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from imbalance.experiments import CONFIGS
from imbalance.train.config import PRESETS, TrainConfig, load_config, synthetic_cache_dir
from imbalance.train.loop import FitResult, fit

SMOKE_ENV = "IMBALANCE_SMOKE"
PRESET_ENV = "IMBALANCE_PRESET"

__all__ = ["CONFIGS", "PRESET_ENV", "SMOKE_ENV", "chapter_config", "chapter_preset",
           "train_in_chapter"]


def chapter_preset(environ: Mapping[str, str] | None = None, cuda: bool | None = None) -> str:
    """The preset a chapter trains with on this machine.

    ``$IMBALANCE_PRESET`` if set (one of :data:`~imbalance.train.PRESETS`); else ``smoke`` when
    ``$IMBALANCE_SMOKE`` is ``1`` (CI sets it); else ``gpu`` when CUDA is available; else
    ``cpu``.

    Args:
        environ: the environment to read (default ``os.environ``).
        cuda: whether a CUDA device is there (default ``torch.cuda.is_available()``).
    """
    env = os.environ if environ is None else environ
    chosen = env.get(PRESET_ENV, "").strip()
    if chosen:
        if chosen not in PRESETS:
            raise ValueError(f"${PRESET_ENV}={chosen!r}: expected one of {sorted(PRESETS)}")
        return chosen
    if env.get(SMOKE_ENV, "").strip() == "1":
        return "smoke"
    if cuda is None:
        cuda = torch.cuda.is_available()
    return "gpu" if cuda else "cpu"


def chapter_config(base: str, preset: str | None = None, overrides: Sequence[str] = (), *,
                   cache: str | os.PathLike | None = None,
                   configs: str | os.PathLike = CONFIGS) -> TrainConfig:
    """``configs/<base>_<preset>.yaml`` with ``overrides``, its synthetic data under ``cache``.

    Args:
        base: the config file stem without the preset, e.g. ``"retinanet_focal"``.
        preset: default :func:`chapter_preset`.
        overrides: ``key=value`` settings, as on the command line.
        cache: where the synthetic benchmark goes (default :func:`imbalance.snapshot.cache_dir`);
            ignored when the configuration names a dataset (``data.root``) or a ``cache_dir``.
    """
    preset = preset or chapter_preset()
    path = Path(configs) / f"{base}_{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem.rsplit("_", 1)[0] for p in Path(configs).glob("*_smoke.yaml"))
        raise FileNotFoundError(f"{path} does not exist; the configurations are {known} "
                                f"with presets {sorted(PRESETS)}")
    config = load_config(path, list(overrides))
    if config.data.root is None and config.data.cache_dir is None:
        if cache is None:
            from imbalance.snapshot import cache_dir
            cache = cache_dir()
        config.data.cache_dir = str(Path(cache) / synthetic_cache_dir(config).relative_to("data"))
    return config


def train_in_chapter(base: str, preset: str | None = None, overrides: Sequence[str] = (), *,
                     out: str | os.PathLike | None = None,
                     cache: str | os.PathLike | None = None) -> FitResult:
    """Train ``configs/<base>_<preset>.yaml`` from scratch and evaluate it, as a chapter does.

    Args:
        base, preset, overrides, cache: as :func:`chapter_config`.
        out: the run folder (default ``<cache>/runs/<base>_<preset>``); a run already there is
            overwritten.

    Returns:
        the :class:`~imbalance.train.FitResult`: metrics, AP dict, ``final.json``, the model.
    """
    config = chapter_config(base, preset, overrides, cache=cache)
    if out is None:
        if cache is None:
            from imbalance.snapshot import cache_dir
            cache = cache_dir()
        out = Path(cache) / "runs" / f"{base}_{config.preset}"
    return fit(config, out=out, overwrite=True)
