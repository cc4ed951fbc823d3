"""Wall-clock of a call for the solvers benchmark: best of ``repeats`` runs after a warm-up, or a single run when
that first run is long (warm-up effects are then negligible and repeating it only costs time)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["timed"]


def timed(fn: Callable[[], Any], repeats: int, once_above: float = math.inf) -> tuple[Any, float]:
    """``(result, seconds)``: the first call is the warm-up; if it took more than ``once_above`` seconds its time
    is returned, otherwise the best of ``repeats`` further calls."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    if first > once_above:
        return out, first
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best
