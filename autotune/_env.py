"""Numbers read from environment variables, refused in one line (UsageError) when bad.

Read when they are used, not at import: a bad value then stops the command that needs it with
"$NAME must be ..., got '...'" (exit 2) before any storage is opened, instead of a traceback
from whichever import came first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

from autotune.errors import UsageError

_N = TypeVar("_N", int, float)


def number(name: str, default: _N, parse: Callable[[str], _N], allowed: Callable[[_N], bool],
           wanted: str) -> _N:
    """$name parsed and checked, else `default`; UsageError naming what is `wanted`."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = parse(text)
    except ValueError:
        raise UsageError(f"${name} must be {wanted}, got {text!r}") from None
    if not allowed(value):
        raise UsageError(f"${name} must be {wanted}, got {text!r}")
    return value


def seconds(name: str, default: float, *, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (> 0 if `positive`)."""
    if positive:
        return number(name, default, float, lambda v: 0 < v < math.inf, "a number of seconds > 0")
    return number(name, default, float, lambda v: 0 <= v < math.inf, "a number of seconds >= 0")


def whole_seconds(name: str, default: int) -> int:
    """A whole number of seconds >= 1 (Optuna's heartbeat settings are integers)."""
    return number(name, default, int, lambda v: v >= 1, "a whole number of seconds >= 1")
