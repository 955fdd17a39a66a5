"""Build a latency table: measure every key a space needs that the table lacks.

Resumable by construction: the table is append-only and durable per key
(`latency_tables.table`), and a build measures only keys without a row. A key
whose measurement raises is retried, then recorded as failed (one bad key
never ends the build); a device that disappears (`DeviceError`) stops the
build with the table intact, and the same command resumes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latency_tables.adb import DeviceError
from latency_tables.backends.base import Backend
from latency_tables.keys import BlockKey
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable, table_paths
from nas.errors import ConfigError
from nas.supernet import SpaceEntry

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
) -> BuildReport:
    """Measure the keys of `entry`'s space (or `keys`) missing from the device's table.

    `statistic` is what a table created here predicts with (an existing table keeps its own).
    """
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
    failed = 0
    # Keys whose kernel this backend lacks are measured once, as the kernel it runs
    # instead (meta.kernel_map says so); their real-kernel twin comes first.
    todo.sort(key=lambda k: backend.kernel_map[k.kernel] != k.kernel)
    bar = tqdm(todo, desc=f"measuring {device}/{backend.name}", unit="key", disable=not progress)
    for key in bar:
        bar.set_postfix_str(f"{key.kind}@{key.kernel}", refresh=False)
        real = BlockKey(key.kind, key.dims, backend.kernel_map[key.kernel])
        if real != key and real in table:
            table.add(Entry(key, table.get(real).measurement))
            continue
        error = ""
        for attempt in range(retries + 1):
            try:
                module, inputs = family.block_model(key.kind, dict(key.dims), batch)
                m = backend.measure(module, inputs, real.kernel)
                table.add(Entry(key, m))
                break
            except DeviceError:
                raise  # the device is gone: stop here, the table resumes from what it holds
            except Exception as e:  # noqa: BLE001  (any failure of one key is recorded, not fatal)
                error = f"{type(e).__name__}: {e}"
                log.warning(
                    "key %s failed (attempt %d/%d): %s", key.id, attempt + 1, retries + 1, error
                )
        else:
            table.add(Entry(key, None, "failed", error))
            failed += 1
    seconds = time.perf_counter() - t0
    table.update_meta(
        spaces=sorted({*table.meta.get("spaces", []), entry.name}),
        build_seconds=round(table.meta.get("build_seconds", 0.0) + seconds, 1),
    )
    done = len(todo) - failed
    return BuildReport(table.csv_path, len(wanted), len(wanted) - len(todo), done, failed, seconds)
