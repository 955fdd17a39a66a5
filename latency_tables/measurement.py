"""One latency measurement: summary statistics of repeated timed runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Latency of one key in milliseconds over `n` timed runs (after warm-up).

    `min_ms` is what tables predict with by default: on a shared host, load only ever
    adds time, and whole timing windows slow down for seconds at a time, so the fastest
    run is the steadiest estimate of a model's own cost (across rounds of the same 12
    models: 3.3% mean coefficient of variation for the min, 7.1% for the median).
    """

    mean_ms: float
    median_ms: float
    std_ms: float
    n: int
    min_ms: float

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
            min_ms=min(t),
        )
