"""`nas latency adapt`: a new device's table from N end-to-end runs and existing tables.

Picks N architectures of the space spread over the source table's latency range, measures
each whole model end to end on the new device (interleaved rounds, each model's best round,
as `nas latency validate` does), fits the transfer model of `latency_tables.transfer` and
writes the adapted table where `nas search` looks for the new device's table. Every
end-to-end run is appended durably to ``<backend>.<space>.end_to_end.jsonl`` beside the
table, so an interrupted adaptation resumes without measuring a finished run again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends.base import Backend
from latency_tables.build import backend_meta
from latency_tables.cost import CostModel
from latency_tables.table import LatencyTable, table_paths
from latency_tables.transfer import (
    adapted_entries,
    append_log,
    fit_transfer,
    group_sums,
    kind_counts,
    read_log,
)
from latency_tables.validate import metrics, runnable_samples, time_end_to_end
from nas.errors import ConfigError
from nas.space import SearchSpace
from nas.supernet import SpaceEntry

log = logging.getLogger(__name__)


def spread_samples(
    space: SearchSpace, cost: CostModel, backend: Backend, n: int, seed: int, pool: int = 40
) -> list[dict[str, Any]]:
    """`n` random samples `backend` can run, at evenly spaced quantiles of the predicted
    latency of `pool`·n random ones: few measurements cover the whole range the fit must
    extrapolate over."""
    cand = runnable_samples(space, backend, space.sample_many(pool * n, rng=seed))
    lat = cost.costs(cand, ("table_ms",))["table_ms"]
    order = np.argsort(lat, kind="stable")
    picks = order[((np.arange(n) + 0.5) / n * len(cand)).astype(int)]
    return [cand[i] for i in picks]


def end_to_end_log_path(root: str | Path, device: str, backend: str, space: str) -> Path:
    return table_paths(root, device, backend)[0].with_name(f"{backend}.{space}.end_to_end.jsonl")


def _source_name(table: LatencyTable) -> str:
    return f"{table.meta['device']}/{table.meta['backend']}"


def adapt(
    entry: SpaceEntry,
    backend: Backend,
    sources: Sequence[LatencyTable],
    root: str | Path,
    device: str,
    *,
    n: int = 10,
    seed: int = 0,
    rounds: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure `n` architectures on `backend` (the new `device`), fit the transfer from
    `sources` and write the adapted table ``<root>/<device>/<backend>.csv``; returns the
    report that the table's meta also holds under ``adapted``."""
    if not sources:
        raise ConfigError("latency adapt: name at least one source table (--from DEVICE/BACKEND)")
    if n < 3:
        raise ConfigError(f"latency adapt: --n must be at least 3 (got {n})")
    csv_path, _ = table_paths(root, device, backend.name)
    if csv_path.exists():
        raise ConfigError(
            f"a table already exists at {csv_path}; adapt into another --device name, or "
            "delete that table (and its .meta.json) first"
        )
    for field in ("statistic", "batch"):
        seen = {str(t.meta.get(field, 1 if field == "batch" else None)) for t in sources}
        if len(seen) > 1:
            raise ConfigError(
                f"latency adapt: the source tables differ in {field} ({sorted(seen)}); "
                "adapt from tables measured alike"
            )
    statistic = sources[0].statistic
    batch = int(sources[0].meta.get("batch", 1))
    space = entry.space()
    names = [_source_name(t) for t in sources]
    first = CostModel(space, sources[0], strict=True)
    samples = spread_samples(space, first, backend, n, seed)
    specs = [space.freeze(s) for s in samples]
    sums = [group_sums(specs, t) for t in sources]  # before any measurement: keys all there

    where = end_to_end_log_path(root, device, backend.name, space.name)
    settings = {
        "fingerprint": backend.fingerprint(),
        "settings": backend.settings(),
        "statistic": statistic,
        "batch": batch,
    }
    records = read_log(where)
    for rec in records:
        if rec.get("measured_with") != settings:
            raise ConfigError(
                f"{where} holds runs measured with {rec.get('measured_with')!r}, not with "
                f"{settings!r}; use the same backend settings, or another --device name"
            )
    index = {s.hash: i for i, s in enumerate(specs)}
    known = {
        (index[r["hash"]], int(r["round"])): float(r["ms"])
        for r in records
        if r["hash"] in index and int(r["round"]) < rounds
    }
    if known:
        log.info("%s: %d end-to-end runs already measured, resuming", where, len(known))

    def record(i: int, r: int, ms: float) -> None:
        append_log(
            where,
            {
                "hash": specs[i].hash,
                "round": r,
                "ms": ms,
                "measured_with": settings,
                "sample": samples[i],
            },
        )

    times = time_end_to_end(
        entry, backend, specs, batch, statistic, rounds, progress, known=known, record=record
    )
    measured = times.min(0)
    model, loo = fit_transfer(names, sums, measured, kind_counts(specs))
    unchanged = sum(s for s in sums[0].values())  # the first source table as it is
    report = {
        "from": names,
        "space": space.name,
        "n": n,
        "seed": seed,
        "rounds": rounds,
        "statistic": statistic,
        "model": model.to_json(),
        "validation": {
            "leave_one_out": metrics(loo, measured),
            "source_unchanged": metrics(unchanged, measured),
        },
        "end_to_end_log": where.name,
        "archs": [
            {"hash": s.hash, "measured_ms": float(m), "loo_ms": float(p)}
            for s, m, p in zip(specs, measured, loo)
        ],
    }
    meta = {
        **backend_meta(backend, batch),
        "statistic": statistic,
        "spaces": [space.name],
        "overhead_ms": model.overhead_ms,
        "adapted": report,
    }
    table = LatencyTable.create(root, device, backend.name, meta)
    table.add_many(adapted_entries(model, sources))
    log.info(
        "adapted %d keys from %s into %s (leave-one-out within ±10%%: %.0f%%)",
        len(table),
        ", ".join(names),
        table.csv_path,
        100 * report["validation"]["leave_one_out"]["within_10pct"],
    )
    return {**report, "table": str(table.csv_path), "keys": len(table)}
