"""The output folder of a run and the rules for reusing one.

``out/config.yaml`` (the resolved configuration), ``out/metrics.jsonl``, ``out/checkpoints/``
(``last.pt``, optionally ``iter_XXXXXX.pt``) and ``out/final.json``. A folder that already holds
a run is only reused on request: ``resume`` continues it (the configuration must match, up to
settings that change nothing in the result) and ``overwrite`` deletes its files and starts over.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from imbalance.files import write_text_atomic
from imbalance.train.config import ConfigError, TrainConfig, config_differences

#: The files and folders of a run inside its output folder.
RUN_FILES: tuple[str, ...] = ("config.yaml", "metrics.jsonl", "final.json", "checkpoints")
#: Settings that may differ between a run and its resumption: they change nothing in the result.
RESUME_MAY_CHANGE: tuple[str, ...] = ("name", "run.progress", "data.workers",
                                      "run.eval_batch_size", "run.compile", "run.channels_last",
                                      "run.keep_checkpoints", "run.checkpoint_every",
                                      "run.threads", "run.eval_bootstrap")


class RunDir:
    """The files of a run in folder ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final_file(self) -> Path:
        return self.path / "final.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    def iteration_checkpoint(self, step: int) -> Path:
        """``checkpoints/iter_XXXXXX.pt`` of step ``step``."""
        return self.checkpoints / f"iter_{step:06d}.pt"

    def holds_run(self) -> bool:
        """Whether any file of a run is in the folder."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def check(self, config: TrainConfig, *, resume: bool, overwrite: bool) -> None:
        """Raise :class:`ConfigError` unless the run may start here; reads, never writes."""
        if resume and overwrite:
            raise ConfigError("resume and overwrite exclude each other: pick one")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"out: {self.path} exists and is not a folder")
        if overwrite or not self.holds_run():
            return
        if not resume:
            raise ConfigError(f"out: {self.path} already holds a run; pass --resume "
                              f"(resume=True) to continue it or --overwrite (overwrite=True) to "
                              f"start it over")
        if not self.config_file.is_file():
            raise ConfigError(f"out: {self.path} holds run files but no config.yaml to resume "
                              f"from; pass --overwrite to start over")
        try:
            saved = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"out: {self.config_file} is not valid YAML: {e}") from None
        differ = config_differences(saved, config.to_dict(), ignore=RESUME_MAY_CHANGE)
        if differ:
            shown = ", ".join(differ[:8]) + (" ..." if len(differ) > 8 else "")
            raise ConfigError(f"out: {self.path} holds a run with a different configuration "
                              f"({shown} differ); resume it with its own config.yaml, or pass "
                              f"--overwrite to start over")

    def prepare(self, config: TrainConfig, *, overwrite: bool) -> None:
        """Create the folder (deleting an old run's files if ``overwrite``) and write
        ``config.yaml`` unless the run is being resumed."""
        if overwrite:
            for name in RUN_FILES:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for stale in self.checkpoints.glob(".*.tmp"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
        if not self.config_file.exists():
            write_text_atomic(self.config_file, config.to_yaml())
