"""Build a latency table: measure every key a space needs that the table lacks.

Resumable by construction: the table is append-only and durable per key
(`latency_tables.table`), and a build measures only keys without a row. A key
whose conversion or measurement raises is retried, then recorded as failed (one bad key
never ends the build); a device that disappears (`DeviceError`) stops the
build with the table intact, and the same command resumes it.

Keys are timed as end-to-end checks time whole models (`latency_tables.validate`): a
chunk of keys is converted once, then timed in `rounds` interleaved rounds, each key
keeping its best round (the round with the lowest statistic). On a shared host a slow
spell lasts seconds and slows every run of its window, so one window per key leaves
some keys inflated (re-timing 120 keys of a one-round table here: their best of 4
rounds was 0.84–0.95 × the table's value, 10th–90th percentile); interleaving makes a
spell hit one round of a few keys instead of every run of one. `timing` (the lock and
the core of `latency_tables.quiet`) is entered around the timing rounds only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latency_tables.adb import DeviceError
from latency_tables.backends.base import Backend
from latency_tables.keys import BlockKey
from latency_tables.measurement import Measurement
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable, measurement_problem, table_paths
from nas.errors import ConfigError
from nas.supernet import Family, SpaceEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildReport:
    table: Path
    needed: int
    already: int
    measured: int
    failed: int
    seconds: float


def backend_meta(backend: Backend, batch: int) -> dict[str, Any]:
    """What a table's meta says of the backend it was measured (or adapted) for."""
    return {
        "fingerprint": backend.fingerprint(),
        "runtime": backend.runtime(),
        "settings": backend.settings(),
        "kernel_map": dict(backend.kernel_map),
        "batch": batch,
    }


def open_table(
    root: str | Path,
    device: str,
    backend: Backend,
    batch: int,
    force: bool = False,
    statistic: str = "min_ms",
) -> LatencyTable:
    """Open the device's table for `backend`, creating it (predicting with `statistic`);
    refuse a foreign one."""
    csv_path, _ = table_paths(root, device, backend.name)
    meta = backend_meta(backend, batch)
    if not csv_path.exists():
        return LatencyTable.create(root, device, backend.name, {**meta, "statistic": statistic})
    table = LatencyTable.load(root, device, backend.name)
    for field in ("fingerprint", "settings", "batch"):
        have, want = table.meta.get(field), meta[field]
        if have != want and not force:
            raise ConfigError(
                f"table {csv_path} was measured with {field}={have!r}, but this build has "
                f"{field}={want!r}; mixing them would make the table lie. Use another --device "
                "name (a new table), the same settings, or --force to add to it anyway."
            )
    return table


def build_table(
    entry: SpaceEntry,
    backend: Backend,
    root: str | Path,
    device: str,
    batch: int = 1,
    retries: int = 1,
    retry_failed: bool = False,
    keys: Sequence[BlockKey] | None = None,
    force: bool = False,
    progress: bool = True,
    statistic: str = "min_ms",
    rounds: int = 1,
    chunk: int = 128,
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> BuildReport:
    """Measure the keys of `entry`'s space (or `keys`) missing from the device's table.

    `statistic` is what a table created here predicts with (an existing table keeps its
    own). Every `chunk` keys are converted, then timed in `rounds` interleaved rounds
    (each key's row is its best round), inside a fresh `timing()` per chunk when given
    (`latency_tables.quiet.timing_context`: a lock and one core, around the rounds only).
    """
    if rounds < 1:
        raise ConfigError(f"rounds must be ≥ 1 (timing rounds per key), got {rounds}")
    family = entry.family
    if family.block_model is None:
        raise ConfigError(
            f"space family {family.name!r} defines no block_model; it cannot be measured"
        )
    t0 = time.perf_counter()
    wanted = list(keys) if keys is not None else SpaceStructure(entry.space()).block_keys()
    table = open_table(root, device, backend, batch, force, statistic)
    have = table.ok() if retry_failed else {e.key.id: e for e in table.entries()}
    todo = [k for k in wanted if k.id not in have]
    log.info(
        "%s on %s/%s: %d keys, %d already in %s, measuring %d",
        entry.name,
        device,
        backend.name,
        len(wanted),
        len(wanted) - len(todo),
        table.csv_path,
        len(todo),
    )
    # Keys whose kernel this backend lacks are measured once, as the kernel it runs
    # instead (meta.kernel_map says so), and stored under every key that aliases it.
    aliases: dict[BlockKey, list[BlockKey]] = {}
    for key in todo:
        real = BlockKey(key.kind, key.dims, backend.kernel_map[key.kernel])
        aliases.setdefault(real, []).append(key)
    measure = []
    for real, ks in aliases.items():
        if real in table:
            table.add_many(Entry(k, table.get(real).measurement) for k in ks)
        else:
            measure.append(real)
    failed = 0
    bar = tqdm(
        total=len(measure),
        desc=f"measuring {device}/{backend.name}",
        unit="key",
        disable=not progress,
    )

    def record(real: BlockKey, got: Measurement | str) -> None:  # durable as soon as known
        nonlocal failed
        ks = aliases[real]
        if isinstance(got, Measurement):
            table.add_many(Entry(k, got) for k in ks)
        else:
            table.add_many(Entry(k, None, "failed", got) for k in ks)
            failed += len(ks)
        bar.update()

    for lo in range(0, len(measure), chunk):
        part = measure[lo : lo + chunk]
        _measure_chunk(
            family, backend, part, batch, retries, rounds, table.statistic, timing, record
        )
    bar.close()
    seconds = time.perf_counter() - t0
    table.update_meta(
        spaces=sorted({*table.meta.get("spaces", []), entry.name}),
        build_seconds=round(table.meta.get("build_seconds", 0.0) + seconds, 1),
        build_rounds=rounds,
    )
    done = len(todo) - failed
    return BuildReport(table.csv_path, len(wanted), len(wanted) - len(todo), done, failed, seconds)


def _measure_chunk(
    family: Family,
    backend: Backend,
    keys: Sequence[BlockKey],
    batch: int,
    retries: int,
    rounds: int,
    stat: str,
    timing: Callable[[], contextlib.AbstractContextManager] | None,
    done: Callable[[BlockKey, Measurement | str], None],
) -> None:
    """Convert `keys`, time them in `rounds` interleaved rounds and call `done(key, best)`
    with each key's best round (lowest `stat`) right after its last round, or with the
    error that failed it (a str)."""
    runners: dict[int, Callable[[], Measurement]] = {}
    errors: dict[int, str] = {}
    for i, key in enumerate(keys):
        for attempt in range(retries + 1):
            try:
                module, inputs = family.block_model(key.kind, dict(key.dims), batch)
                runners[i] = backend.prepare(module, inputs, key.kernel)
                break
            except DeviceError:
                raise  # the device is gone: stop here, the table resumes from what it holds
            except Exception as e:  # noqa: BLE001  (any failure of one key is recorded, not fatal)
                errors[i] = _failure(key, attempt, retries, e)
        else:
            done(key, errors[i])
    best: dict[int, Measurement] = {}
    with timing() if timing is not None else contextlib.nullcontext():
        for r in range(rounds):
            for i, run in runners.items():
                m = _timed(keys[i], run, retries)
                if isinstance(m, Measurement):
                    if i not in best or getattr(m, stat) < getattr(best[i], stat):
                        best[i] = m
                else:
                    errors[i] = m
                if r == rounds - 1:
                    done(keys[i], best.get(i, errors.get(i, "")))


def _timed(key: BlockKey, run: Callable[[], Measurement], retries: int) -> Measurement | str:
    """One round of one key: its measurement, or the error of its last attempt."""
    error = ""
    for attempt in range(retries + 1):
        try:
            m = run()
            problem = measurement_problem(m)
            if problem is None:
                return m
            raise ValueError(f"measurement of key {key.id}: {problem}")
        except DeviceError:
            raise
        except Exception as e:  # noqa: BLE001  (any failure of one key is recorded, not fatal)
            error = _failure(key, attempt, retries, e)
    return error


def _failure(key: BlockKey, attempt: int, retries: int, e: Exception) -> str:
    error = f"{type(e).__name__}: {e}"
    log.warning("key %s failed (attempt %d/%d): %s", key.id, attempt + 1, retries + 1, error)
    return error
