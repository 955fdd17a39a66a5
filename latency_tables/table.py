"""The latency table: one CSV row per key, a JSON file of provenance beside it.

Layout: ``<root>/<device>/<backend>.csv`` and ``<root>/<device>/<backend>.meta.json``.
The CSV is append-only: each measured key is one line written with a single
``write`` and fsynced, so a build killed at any moment loses at most the key it
was measuring; a torn last line is ignored on load. Re-measured keys append a
new line; the last line of a key wins. The meta file is replaced atomically.

A table adapted from other devices' tables (`nas latency adapt`, `latency_tables.transfer`)
has the same layout; its meta says so under ``adapted`` and holds ``overhead_ms``, a
per-inference time no block owns, which the cost model adds to every architecture.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latency_tables.keys import BlockKey
from latency_tables.measurement import Measurement
from nas.errors import ConfigError, MissingLatencyEntryError
from nas.io import atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the min_ms column and the meta's `statistic`
COLUMNS = (
    "key",
    "kind",
    "kernel",
    "dims",
    "mean_ms",
    "median_ms",
    "std_ms",
    "n",
    "min_ms",
    "status",
    "error",
    "measured_at",
)
DATA_ROOT = Path(__file__).parent / "data"
STATISTICS = ("min_ms", "median_ms", "mean_ms")
"""What a table predicts with, chosen when it is created (meta `statistic`)."""
TIMING_COLUMNS = ("mean_ms", "median_ms", "std_ms", "min_ms")


def measurement_problem(m: Measurement) -> str | None:
    """Why `m` cannot be a table row, or None.

    One NaN time makes every architecture that uses the key predict NaN, and a NaN
    slips through budget filters, so a table holds only finite, non-negative times
    over at least one timed run.
    """
    for col in TIMING_COLUMNS:
        v = getattr(m, col)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            return f"{col}={v!r} is not a finite time >= 0"
    if isinstance(m.n, bool) or not isinstance(m.n, numbers.Integral) or m.n < 1:
        return f"n={m.n!r} is not a positive count of timed runs"
    return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Entry:
    """One row: a measured key (status ``ok``) or a key that failed to measure."""

    key: BlockKey
    measurement: Measurement | None
    status: str = "ok"
    error: str = ""
    measured_at: str = field(default_factory=now)

    def row(self) -> list[str]:
        m = self.measurement
        stats = (
            [
                f"{m.mean_ms:.6g}",
                f"{m.median_ms:.6g}",
                f"{m.std_ms:.6g}",
                str(m.n),
                f"{m.min_ms:.6g}",
            ]
            if m
            else ["", "", "", "0", ""]
        )
        dims = json.dumps(dict(self.key.dims), sort_keys=True, separators=(",", ":"))
        return [
            self.key.id,
            self.key.kind,
            self.key.kernel,
            dims,
            *stats,
            self.status,
            self.error.replace("\n", " ")[:500],
            self.measured_at,
        ]


def table_paths(root: str | Path, device: str, backend: str) -> tuple[Path, Path]:
    d = Path(root) / device
    return d / f"{backend}.csv", d / f"{backend}.meta.json"


class LatencyTable:
    """Latencies of block keys on one device with one backend, with provenance."""

    def __init__(
        self, csv_path: Path, meta_path: Path, meta: dict[str, Any], entries: dict[str, Entry]
    ):
        self.csv_path = csv_path
        self.meta_path = meta_path
        self.meta = meta
        self._entries = entries

    # -- creation and loading ---------------------------------------------------------------
    @classmethod
    def create(
        cls, root: str | Path, device: str, backend: str, meta: Mapping[str, Any]
    ) -> LatencyTable:
        csv_path, meta_path = table_paths(root, device, backend)
        if csv_path.exists() or meta_path.exists():
            raise ConfigError(
                f"a table already exists at {csv_path}; open it with LatencyTable.load"
            )
        statistic = _checked_statistic(meta.get("statistic", "min_ms"))
        full = {
            "schema_version": SCHEMA_VERSION,
            "statistic": statistic,
            "device": device,
            "backend": backend,
            "created": now(),
            **meta,
        }
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
        atomic_write_text(csv_path, buf.getvalue())
        write_json(meta_path, full)
        return cls(csv_path, meta_path, full, {})

    @classmethod
    def load(cls, root: str | Path, device: str, backend: str) -> LatencyTable:
        csv_path, meta_path = table_paths(root, device, backend)
        return cls.from_files(csv_path, meta_path)

    @classmethod
    def from_files(cls, csv_path: str | Path, meta_path: str | Path | None = None) -> LatencyTable:
        csv_path = Path(csv_path)
        meta_path = Path(meta_path) if meta_path else csv_path.with_suffix(".meta.json")
        if not csv_path.is_file() or not meta_path.is_file():
            raise ConfigError(
                f"no latency table at {csv_path} (+ {meta_path.name}); measure one with "
                f"`nas latency build --device {csv_path.parent.name} --backend {csv_path.stem} "
                "--space <experiment.yaml | space>`"
            )
        try:
            meta = read_json(meta_path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{meta_path} is not a readable table metadata file: {e}") from None
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{meta_path} has schema_version {version!r}; this mqnas reads version "
                f"{SCHEMA_VERSION}. Rebuild the table with `nas latency build`."
            )
        _checked_statistic(meta.get("statistic"), meta_path)
        return cls(csv_path, meta_path, meta, _read_rows(csv_path))

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ok())

    def __contains__(self, key: object) -> bool:
        k = key.id if isinstance(key, BlockKey) else key
        e = self._entries.get(k)  # type: ignore[arg-type]
        return e is not None and e.status == "ok"

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def ok(self) -> dict[str, Entry]:
        return {k: e for k, e in self._entries.items() if e.status == "ok"}

    def failed(self) -> dict[str, Entry]:
        return {k: e for k, e in self._entries.items() if e.status != "ok"}

    def get(self, key: BlockKey | str) -> Entry:
        k = key.id if isinstance(key, BlockKey) else key
        if k not in self._entries:
            raise MissingLatencyEntryError(self.missing_message([k]))
        return self._entries[k]

    @property
    def statistic(self) -> str:
        """The `Measurement` field this table predicts with (end-to-end checks use it too)."""
        return str(self.meta["statistic"])

    def latency_ms(self, key: BlockKey | str) -> float:
        """A key's latency (its `statistic`); `MissingLatencyEntryError` if the table lacks it."""
        k = key.id if isinstance(key, BlockKey) else key
        e = self._entries.get(k)
        if e is None or e.measurement is None:
            raise MissingLatencyEntryError(self.missing_message([k]))
        return float(getattr(e.measurement, self.statistic))

    def missing(self, keys: Iterable[BlockKey]) -> list[BlockKey]:
        return [k for k in keys if k not in self]

    def missing_message(self, key_ids: list[str], space: str = "<experiment.yaml | space>") -> str:
        shown = ", ".join(key_ids[:3]) + (f" … ({len(key_ids)} in all)" if len(key_ids) > 3 else "")
        return (
            f"latency table {self.csv_path} lacks {len(key_ids)} key(s): {shown}. Measure them "
            f"with `nas latency build --device {self.meta.get('device')} --backend "
            f"{self.meta.get('backend')} --space {space}`"
        )

    # -- writing -----------------------------------------------------------------------------
    def add(self, entry: Entry) -> None:
        """Append one entry durably (one write, flushed and fsynced).

        A measured entry with a NaN, infinite or negative time is refused (`ValueError`)
        before anything is written: `load` would refuse the row, and `build_table` records
        the key as failed instead.
        """
        self.add_many([entry])

    def add_many(self, entries: Iterable[Entry]) -> None:
        """`add` of several entries in one write (all checked before any is written)."""
        entries = list(entries)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for entry in entries:
            problem = measurement_problem(entry.measurement) if entry.measurement else None
            if entry.status == "ok" and problem:
                raise ValueError(f"measurement of key {entry.key.id}: {problem}")
            writer.writerow(entry.row())
        with open(self.csv_path, "a", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        for entry in entries:
            self._entries[entry.key.id] = entry

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields, updated=now())
        write_json(self.meta_path, self.meta)

    def to_frame(self):  # -> pandas.DataFrame (pandas imported lazily)
        import pandas as pd

        rows = []
        for e in self._entries.values():
            m = e.measurement
            rows.append(
                {
                    "key": e.key.id,
                    "kind": e.key.kind,
                    "kernel": e.key.kernel,
                    **dict(e.key.dims),
                    "mean_ms": m.mean_ms if m else None,
                    "median_ms": m.median_ms if m else None,
                    "std_ms": m.std_ms if m else None,
                    "n": m.n if m else 0,
                    "min_ms": m.min_ms if m else None,
                    "status": e.status,
                }
            )
        return pd.DataFrame(rows)


def _checked_statistic(statistic: Any, where: Path | None = None) -> str:
    if statistic not in STATISTICS:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}statistic {statistic!r} is unknown; choose one of {STATISTICS}")
    return str(statistic)


def _read_rows(path: Path) -> dict[str, Entry]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    torn = lines[-1] != ""  # a build killed mid-write leaves a last line without newline
    if torn:
        log.warning("%s: ignoring a torn last line (an interrupted write)", path)
        lines = lines[:-1]
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        raise ConfigError(
            f"{path} is not a latency table: its header is {header!r}, expected {list(COLUMNS)}"
        )
    entries: dict[str, Entry] = {}
    bad: dict[str, str] = {}  # key → why its winning row is unusable
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            rec = dict(zip(COLUMNS, row, strict=True))
            key = BlockKey.parse(rec["key"])
            m = (
                Measurement(
                    float(rec["mean_ms"]),
                    float(rec["median_ms"]),
                    float(rec["std_ms"]),
                    int(rec["n"]),
                    float(rec["min_ms"]),
                )
                if rec["status"] == "ok"
                else None
            )
        except (ValueError, ConfigError) as e:
            raise ConfigError(
                f"{path}:{lineno}: corrupted row ({e}); fix or delete the line"
            ) from None
        problem = measurement_problem(m) if m else None
        if problem:
            # the last row of a key wins, so a later good row re-measured over this one is fine
            entries.pop(key.id, None)
            bad[key.id] = f"{path}:{lineno}: key {key.id}: {problem}"
            continue
        bad.pop(key.id, None)
        entries[key.id] = Entry(key, m, rec["status"], rec["error"], rec["measured_at"])
    if bad:
        first = next(iter(bad.values()))
        more = f" ({len(bad)} such rows in all)" if len(bad) > 1 else ""
        raise ConfigError(
            f"{first}{more}; delete the line(s) and rerun `nas latency build --device "
            f"{path.parent.name} --backend {path.stem} --space <experiment.yaml | space>`, "
            "which measures only the keys without a row"
        )
    return entries
