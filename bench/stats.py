"""Medians and spreads over rounds; paired ratios from the same round."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i]/b[i]: both measured in round i, so slow phases of the machine cancel out."""
    return [x / y for x, y in zip(a, b, strict=True) if y > 0]


def rotate(items: Sequence[str], round_no: int) -> list[str]:
    """A different starting alternative each round, so none always runs first."""
    k = round_no % len(items)
    return list(items[k:]) + list(items[:k])
