"""Figures over samples: median, nearest-rank p95, milliseconds."""

from __future__ import annotations

import math
import statistics


def p95(xs: list[float]) -> float | None:
    """Nearest-rank 95th percentile: the ceil(0.95 n)-th smallest value."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 1)
