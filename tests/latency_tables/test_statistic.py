"""What a table predicts with (its `statistic`) and how end-to-end checks measure."""

from __future__ import annotations

import json

import pytest

import search_spaces  # noqa: F401  (registers the spaces)
from latency_tables.backends.onnxruntime import OnnxRuntimeBackend
from latency_tables.keys import BlockKey
from latency_tables.measurement import Measurement
from latency_tables.table import Entry, LatencyTable
from latency_tables.validate import time_end_to_end
from nas import SPACES
from nas.errors import ConfigError

KEY = BlockKey("resnet", (("in", 8),), "fp32")
M = Measurement(mean_ms=3.0, median_ms=2.0, std_ms=0.5, n=7, min_ms=1.0)


def test_measurement_keeps_the_fastest_run() -> None:
    m = Measurement.from_times_ms([2.0, 1.5, 9.0, 2.5])
    assert (m.min_ms, m.median_ms, m.n) == (1.5, 2.25, 4)


@pytest.mark.parametrize(("statistic", "expected"), [(None, 1.0), ("median_ms", 2.0)])
def test_a_table_predicts_with_its_statistic(tmp_path, statistic, expected) -> None:
    meta = {} if statistic is None else {"statistic": statistic}
    LatencyTable.create(tmp_path, "dev", "torch", meta).add(Entry(KEY, M))
    table = LatencyTable.load(tmp_path, "dev", "torch")  # every statistic survives the CSV
    assert table.statistic == (statistic or "min_ms")
    assert table.latency_ms(KEY) == expected
    assert table.get(KEY).measurement == M


def test_unknown_statistic_and_old_schema_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="statistic 'p99' is unknown; choose one of"):
        LatencyTable.create(tmp_path, "dev", "torch", {"statistic": "p99"})
    table = LatencyTable.create(tmp_path, "dev", "torch", {})
    meta = json.loads(table.meta_path.read_text())
    table.meta_path.write_text(json.dumps({**meta, "schema_version": 1}))
    with pytest.raises(ConfigError, match="schema_version 1.*Rebuild the table"):
        LatencyTable.load(tmp_path, "dev", "torch")


class CountingBackend(OnnxRuntimeBackend):
    """The real onnxruntime backend, recording conversions and every timing it returns."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.prepared = 0
        self.timings: list[list[Measurement]] = []

    def prepare(self, module, inputs, plan):
        run = super().prepare(module, inputs, plan)
        self.prepared += 1
        seen: list[Measurement] = []
        self.timings.append(seen)

        def timed() -> Measurement:
            seen.append(run())
            return seen[-1]

        return timed


def test_end_to_end_converts_once_and_times_every_arch_each_round() -> None:
    entry = SPACES.get("test_mobile_unet")
    space = entry.space()
    specs = [space.freeze(s) for s in space.sample_many(2, rng=3)]
    backend = CountingBackend(threads=1, warmup=1, runs=3)
    ms = time_end_to_end(entry, backend, specs, statistic="median_ms", rounds=3)
    assert backend.prepared == 2 and [len(t) for t in backend.timings] == [3, 3]
    assert ms.T.tolist() == [[m.median_ms for m in t] for t in backend.timings]
    with pytest.raises(ValueError, match="rounds must be ≥ 1"):
        time_end_to_end(entry, backend, specs, rounds=0)
