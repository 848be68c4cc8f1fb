"""Files a killed process never leaves half-written, and JSON-lines files read back.

:func:`write_atomic` writes to a temporary file in the target's folder and renames it over the
target, so a reader (or a run resumed after a kill) sees the old file or the new one, never part
of one; ``durable=True`` also flushes the file and the rename to disk before returning (for
checkpoints, which a power cut must not lose). :func:`read_jsonl` reads the one-object-a-line logs
that :class:`imbalance.train.metrics.MetricsLog` appends to.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], object], *,
                 binary: bool = False, durable: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    Args:
        path: the file to (re)place; its folder is created if missing.
        write: writes the contents to the open file object it is given.
        binary: open the temporary file in ``"wb"`` rather than UTF-8 text mode.
        durable: ``fsync`` the file before the rename, and the folder after it.

    Returns:
        ``path``. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
                       ) as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform has folder handles)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """``data`` as indented JSON (numpy and torch scalars as numbers, paths as strings, NaN and
    infinities as ``null``: standard JSON has no such numbers), written atomically, with a
    final newline."""
    return write_text_atomic(path, json_text(data, indent=indent) + "\n")


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as standard JSON: :func:`write_json_atomic`'s conversions, without the file."""
    return json.dumps(finite_or_none(data), indent=indent, default=_jsonable, allow_nan=False)


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float (in nested dicts, lists and tuples) replaced by
    ``None``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(v) for v in data]
    if hasattr(data, "item") and getattr(data, "ndim", 1) == 0:
        return finite_or_none(data.item())
    return data


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, one object a line (blank lines skipped).

    Raises:
        ValueError: a line is not JSON; the message names the file and the line.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {number} is not JSON: {e.msg}") from e
    return records
