"""The output folder of a run and the rules for reusing one.

``out/config.yaml`` (the resolved configuration), ``out/metrics.jsonl``, ``out/checkpoints/``
(``last.pt``, optionally ``iter_XXXXXX.pt``) and ``out/final.json``. A folder that already holds
a run is only reused on request: ``resume`` continues it (the configuration must match, up to
settings that change nothing in the result) and ``overwrite`` deletes its files and starts over.

One process at a time: :meth:`RunDir.lock` holds ``out/.lock`` (an exclusive ``flock``, released
by the system when the process ends, however it ends) for as long as the run trains, so a second
process on the same folder (a second ``--resume``, or ``--overwrite`` under a running run) fails
at once, before it changes anything, with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import yaml

from imbalance.files import read_jsonl, write_text_atomic
from imbalance.train.config import ConfigError, TrainConfig, config_differences

#: The files and folders of a run inside its output folder.
RUN_FILES: tuple[str, ...] = ("config.yaml", "metrics.jsonl", "final.json", "checkpoints")
#: Settings that may differ between a run and its resumption: they change nothing in the result.
RESUME_MAY_CHANGE: tuple[str, ...] = ("name", "run.progress", "data.workers",
                                      "run.eval_batch_size", "run.compile", "run.channels_last",
                                      "run.keep_checkpoints", "run.checkpoint_every",
                                      "run.threads", "run.eval_bootstrap")


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLockedError(ConfigError):
    """Another process is running in the output folder; the message names it (pid, host)."""


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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock (created with the folder if missing) while the block runs.

        Raises:
            RunLockedError: another process holds it; the message names that process.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        handle = open(self.path / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"out: {self.path} is in use by {holder}, which is training "
                                 f"there; wait for it to end (or stop it), or choose another "
                                 f"--out") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

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
        self._check_checkpoint(config)
        try:
            saved = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"out: {self.config_file} is not valid YAML: {e}") from None
        with contextlib.suppress(ConfigError):  # a field added since takes its default
            saved = TrainConfig.from_dict(saved).to_dict()
        differ = config_differences(saved, config.to_dict(), ignore=RESUME_MAY_CHANGE)
        if differ:
            shown = ", ".join(differ[:8]) + (" ..." if len(differ) > 8 else "")
            raise ConfigError(f"out: {self.path} holds a run with a different configuration "
                              f"({shown} differ); resume it with its own config.yaml, or pass "
                              f"--overwrite to start over")

    def _check_checkpoint(self, config: TrainConfig) -> None:
        """A run to resume whose checkpoint should exist but does not (deleted, or lost) would
        silently start over and truncate its metrics: refuse it."""
        if self.last_checkpoint.is_file():
            return
        logged = 0
        if self.metrics_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                logged = max((r.get("step", 0) for r in read_jsonl(self.metrics_file)),
                             default=0)
        every = config.run.checkpoint_every
        # step k's record is logged before step k's checkpoint is written: a run killed in
        # between has logged k steps and no checkpoint; one that logged past k had one
        if self.final_file.is_file() or (every and logged > every):
            kept = sorted(p.name for p in self.checkpoints.glob("iter_*.pt")) \
                if self.checkpoints.is_dir() else []
            hint = (f"; copy the latest of {kept} to {self.last_checkpoint} to resume from it"
                    if kept else "")
            raise ConfigError(f"out: {self.last_checkpoint} is missing, but the run in "
                              f"{self.path} logged {logged} steps (checkpoints every {every}): "
                              f"resuming would start over and drop its metrics{hint}; pass "
                              f"--overwrite to start over on purpose")

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
