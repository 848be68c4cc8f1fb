"""Checkpoints written atomically.

:func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and
renames it over the target, so a run killed at any moment leaves either the previous checkpoint
or the new one, never half of one. (The generators' states a checkpoint carries come from
:mod:`imbalance.train.seeding`.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from imbalance.files import write_atomic


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(state)`` to ``path`` atomically and durably (write, fsync, rename, fsync the
    folder); returns ``path``."""
    return write_atomic(path, lambda f: torch.save(state, f), binary=True, durable=True)


def load_checkpoint(path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors on ``map_location``)."""
    return torch.load(Path(path), map_location=map_location, weights_only=False)
