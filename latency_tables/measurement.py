"""One latency measurement: summary statistics of repeated timed runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Latency of one key in milliseconds over `n` timed runs (after warm-up)."""

    mean_ms: float
    median_ms: float
    std_ms: float
    n: int

    @classmethod
    def from_times_ms(cls, times_ms: Sequence[float]) -> Measurement:
        if not times_ms:
            raise ValueError("a measurement needs at least one timed run")
        t = list(times_ms)
        return cls(
            mean_ms=statistics.fmean(t),
            median_ms=statistics.median(t),
            std_ms=statistics.pstdev(t) if len(t) > 1 else 0.0,
            n=len(t),
        )
