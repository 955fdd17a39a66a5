"""Rows whose timings are not finite non-negative times are refused on load, naming the row."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest

import search_spaces  # noqa: F401
from latency_tables.backends import BACKENDS
from latency_tables.build import build_table
from latency_tables.keys import BlockKey
from latency_tables.measurement import Measurement
from latency_tables.structure import SpaceStructure
from latency_tables.table import COLUMNS, Entry, LatencyTable
from nas import SPACES, ConfigError

FIX = "nas latency build --device host --backend torch --space <experiment.yaml | space>"


def _key(i: int) -> BlockKey:
    return BlockKey("resnet", (("in", 8 * (i + 1)), ("out", 8)), "fp32")


def _table(tmp_path, n: int = 3) -> LatencyTable:
    table = LatencyTable.create(tmp_path, "host", "torch", {"statistic": "min_ms"})
    for i in range(n):
        table.add(Entry(_key(i), Measurement(2.0 + i, 1.9 + i, 0.1, 5, 1.8 + i)))
    return table


def _edit(table: LatencyTable, line: int, **values: str) -> None:
    """Set columns of CSV line `line` (1 is the header), as a hand edit or a bad tool would."""
    rows = list(csv.reader(io.StringIO(table.csv_path.read_text())))
    for col, v in values.items():
        rows[line - 1][COLUMNS.index(col)] = v
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    table.csv_path.write_text(buf.getvalue())


@pytest.mark.parametrize(
    "col,value",
    [
        ("mean_ms", "nan"),
        ("median_ms", "-0.5"),
        ("std_ms", "inf"),
        ("min_ms", "-inf"),
        ("min_ms", "NaN"),
        ("n", "0"),
        ("n", "-3"),
    ],
)
def test_a_bad_value_is_refused_naming_file_line_key_and_fix(tmp_path, col, value):
    table = _table(tmp_path)
    _edit(table, 3, **{col: value})
    with pytest.raises(ConfigError) as e:
        LatencyTable.load(tmp_path, "host", "torch")
    msg = str(e.value)
    assert msg.startswith(f"{table.csv_path}:3: key {_key(1).id}: {col}=")
    assert FIX in msg and "delete the line" in msg and "\n" not in msg


def test_every_bad_row_is_counted(tmp_path):
    table = _table(tmp_path)
    _edit(table, 2, min_ms="nan")
    _edit(table, 4, mean_ms="-1")
    with pytest.raises(ConfigError, match=r":2: key .*\(2 such rows in all\)"):
        LatencyTable.load(tmp_path, "host", "torch")


def test_failed_rows_and_superseded_bad_rows_still_load(tmp_path):
    table = _table(tmp_path)
    table.add(Entry(_key(7), None, "failed", "RuntimeError: boom"))  # empty stats, n = 0
    _edit(table, 2, min_ms="nan")
    table.add(Entry(_key(0), Measurement(2.0, 1.9, 0.1, 5, 1.7)))  # re-measured: last row wins
    back = LatencyTable.load(tmp_path, "host", "torch")
    assert back.latency_ms(_key(0)) == 1.7 and math.isfinite(back.latency_ms(_key(2)))
    assert list(back.failed()) == [_key(7).id] and len(back) == 3
    # ...but a bad row after a good one is the key's value, and is refused
    _edit(back, 6, median_ms="inf")
    with pytest.raises(ConfigError, match=rf":6: key {re.escape(_key(0).id)}: median_ms=inf"):
        LatencyTable.load(tmp_path, "host", "torch")


def test_add_refuses_a_bad_measurement_and_writes_nothing(tmp_path):
    table = _table(tmp_path)
    before = table.csv_path.read_text()
    with pytest.raises(ValueError, match=rf"key {re.escape(_key(5).id)}: min_ms=nan"):
        table.add(Entry(_key(5), Measurement(1.0, 1.0, 0.0, 3, math.nan)))
    with pytest.raises(ValueError, match="n=0 is not a positive count"):
        table.add(Entry(_key(5), Measurement(1.0, 1.0, 0.0, 0, 1.0)))
    assert table.csv_path.read_text() == before and _key(5) not in table


def test_the_fix_in_the_message_works(tmp_path):
    """Delete the bad line and rerun the build: it measures that key only."""
    entry = SPACES.get("test_mobile_unet")
    keys = SpaceStructure(entry.space()).block_keys()[:3]
    backend = BACKENDS.get("torch")
    build_table(entry, backend(threads=1, warmup=1, runs=3), tmp_path, "host", keys=keys,
                progress=False)  # fmt: skip
    table = LatencyTable.load(tmp_path, "host", "torch")
    _edit(table, 3, mean_ms="nan")
    with pytest.raises(ConfigError, match=":3: "):
        LatencyTable.load(tmp_path, "host", "torch")
    lines = table.csv_path.read_text().split("\n")
    table.csv_path.write_text("\n".join(lines[:2] + lines[3:]))
    rep = build_table(
        entry, backend(threads=1, warmup=1, runs=3), tmp_path, "host", keys=keys, progress=False
    )
    assert (rep.already, rep.measured, rep.failed) == (2, 1, 0)
    again = LatencyTable.load(tmp_path, "host", "torch")
    assert not again.missing(keys) and all(math.isfinite(again.latency_ms(k)) for k in keys)
