"""Where a detector's loss settings come from: the loss function's own defaults.

Each loss parameter has one default, in the signature of the loss that takes it
(:func:`imbalance.losses.balanced_l1_loss`'s ``beta``, :class:`imbalance.losses.GHMC`'s ``bins``);
a detector copies it with :func:`signature_defaults` and writes a number of its own only where the
authors' released configuration for that detector differs, with the reason beside it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def signature_defaults(loss: Callable[..., Any], *names: str) -> dict[str, Any]:
    """The defaults of the parameters ``names`` of ``loss`` (a function or a module class).

    Raises:
        ValueError: ``loss`` has no such parameter, or it has no default.
    """
    params = inspect.signature(loss).parameters
    missing = [n for n in names if n not in params or params[n].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"{getattr(loss, '__name__', loss)} has no default for {missing}")
    return {n: params[n].default for n in names}
