"""Opening a space's latency table: where it lives, which backend measures it, what it
lacks, and the cost model over it — the one place `nas search`, `nas latency` and
the report go through.

`TableSource` says where a table is (root, device, backend) and how to measure into
it (`BackendSettings`); `coverage` lists what a space needs that the table lacks;
`open_cost_model` returns the cost model, measuring the missing keys first when the
backend runs on this host and that is allowed, and failing before any measurement
when a requested calibration is missing.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latency_tables.backends import BACKENDS, Backend
from latency_tables.calibration import Calibration, calibration_path
from latency_tables.cost import CostModel
from latency_tables.keys import BlockKey
from latency_tables.structure import SpaceStructure
from latency_tables.table import DATA_ROOT, LatencyTable, table_paths
from nas.errors import ConfigError
from nas.supernet import SpaceEntry

log = logging.getLogger(__name__)

#: Backends that measure on this machine (a table of theirs can be completed on the fly).
HOST_BACKENDS = ("torch", "onnxruntime", "tflite", "executorch")


def host_device() -> str:
    """The table name of this host kind (the shipped tables use it), e.g. ``cpu-x86_64``."""
    return f"cpu-{platform.machine()}"


@dataclass(frozen=True)
class BackendSettings:
    """How to build a measurement backend: its registered name, threads, warm-up and timed
    runs per key, and its own options (adb: ``serial``, ``taskset``, ``benchmark_binary``;
    torch: ``device``)."""

    name: str
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        cls = BACKENDS.get(self.name)
        opts = {k: v for k, v in self.options.items() if v is not None}
        return cls(threads=self.threads, warmup=self.warmup, runs=self.runs, **opts)


@dataclass(frozen=True)
class TableSource:
    """A table's location (``<root>/<device>/<backend>.csv``) and how to measure into it."""

    backend: BackendSettings
    device: str = field(default_factory=host_device)
    root: Path = DATA_ROOT

    @property
    def csv_path(self) -> Path:
        return table_paths(self.root, self.device, self.backend.name)[0]

    def build_command(self, space: str) -> str:
        """The command that measures this table's keys of `space`."""
        tables = "" if Path(self.root) == DATA_ROOT else f" --tables {self.root}"
        return (
            f"nas latency build --space {space} --backend {self.backend.name} "
            f"--device {self.device}{tables}"
        )

    def load(self) -> LatencyTable | None:
        """The table, or None when nothing has been measured there yet."""
        if not self.csv_path.exists():
            return None
        return LatencyTable.load(self.root, self.device, self.backend.name)


def coverage(
    structure: SpaceStructure, source: TableSource
) -> tuple[LatencyTable | None, list[BlockKey]]:
    """The table (None if absent) and the keys of the space it lacks."""
    keys = structure.block_keys()
    table = source.load()
    return table, (list(keys) if table is None else table.missing(keys))


def open_cost_model(
    entry: SpaceEntry,
    source: TableSource,
    *,
    measure_missing: bool = True,
    calibrated: bool | None = False,
    progress: bool = True,
    space_arg: str | None = None,
) -> CostModel:
    """The strict cost model of `entry`'s space over `source`'s table.

    Missing keys are measured first when `measure_missing` and the backend runs on this
    host; otherwise they are an error naming the command that measures them
    (`space_arg`: how the user named the space, default its registered name).
    `calibrated`: predict with the table's calibration of this space (True: an error
    before any measurement when there is none; None: when there is one, else the raw sum).
    """
    from latency_tables.build import build_table

    space = entry.space()
    name = space_arg or space.name
    structure = SpaceStructure(space)
    cal_path = calibration_path(source.csv_path, space.name)
    if calibrated and not cal_path.exists():
        raise ConfigError(
            f"latency.calibrated: no calibration of space {space.name!r} at {cal_path}; fit "
            f"one with `nas latency validate --space {name} --backend {source.backend.name} "
            f"--device {source.device}` or set latency.calibrated: false"
        )
    table, missing = coverage(structure, source)
    if missing:
        if not measure_missing or source.backend.name not in HOST_BACKENDS:
            where = (
                f"table {source.csv_path}"
                if table is not None
                else f"no table at {source.csv_path}"
            )
            raise ConfigError(
                f"latency: {where} lacks {len(missing)} keys of space {name!r}; measure them "
                f"with `{source.build_command(name)}` (or set latency.measure_missing: true "
                "for a host backend)"
            )
        log.info(
            "latency table %s lacks %d keys of %s: measuring them",
            source.csv_path,
            len(missing),
            name,
        )
        with source.backend.build() as backend:
            build_table(entry, backend, source.root, source.device, progress=progress)
        table = source.load()
    calibration = None
    # asked for: said at INFO; by default (None): at DEBUG, as it is the usual case
    level = logging.INFO if calibrated else logging.DEBUG
    if calibrated or (calibrated is None and cal_path.exists()):
        calibration = Calibration.load(cal_path)
        log.log(level, "latency: the table sum calibrated by %s", cal_path)
    elif calibrated is None:
        log.debug(
            "latency: no calibration of %s at %s; predicting the raw table sum", name, cal_path
        )
    return CostModel(space, table, strict=True, structure=structure, calibration=calibration)
