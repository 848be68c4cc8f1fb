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


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read; the message names it and what to do."""


def load_checkpoint(path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors on ``map_location``).

    Raises:
        CheckpointError: the file is truncated, garbage or not a checkpoint (a dict).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many kinds for a damaged file  # noqa: BLE001
        raise CheckpointError(
            f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]}); it is truncated or "
            f"not a checkpoint. Resume from an iteration checkpoint (copy one of "
            f"{path.parent}/iter_*.pt over it, if any) or start over with --overwrite") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint; start "
                              f"over with --overwrite")
    return state
