"""Building tables: complete, incremental, failures recorded, foreign tables refused."""

from __future__ import annotations

import json

import pytest

import search_spaces  # noqa: F401
from latency_tables.backends import BACKENDS
from latency_tables.build import build_table
from latency_tables.keys import BlockKey
from latency_tables.structure import SpaceStructure
from latency_tables.table import LatencyTable
from nas import SPACES, ConfigError

ENTRY = "test_mobile_unet"


def torch_backend(**kw):
    return BACKENDS.get("torch")(threads=1, warmup=1, runs=3, **kw)


def test_build_is_complete_then_incremental(tmp_path):
    entry = SPACES.get(ENTRY)
    keys = SpaceStructure(entry.space()).block_keys()
    first = build_table(entry, torch_backend(), tmp_path, "host", progress=False)
    assert (first.needed, first.already, first.failed) == (len(keys), 0, 0)
    assert first.measured == len(keys)
    table = LatencyTable.load(tmp_path, "host", "torch")
    assert len(table) == len(keys) and not table.missing(keys)
    assert all(e.measurement.n == 3 and e.measurement.median_ms > 0 for e in table.entries())
    meta = table.meta
    assert meta["settings"]["runs"] == 3 and meta["fingerprint"]["kind"] == "host"
    assert meta["runtime"]["runtime"] and ENTRY in meta["spaces"]
    again = build_table(entry, torch_backend(), tmp_path, "host", progress=False)
    assert (again.already, again.measured) == (len(keys), 0)


def test_a_failing_key_is_recorded_and_the_build_goes_on(tmp_path):
    entry = SPACES.get(ENTRY)
    good = SpaceStructure(entry.space()).block_keys()[:3]
    bad = BlockKey(
        "resnet",
        (
            ("in", 8),
            ("inner", 6),
            ("out", 8),
            ("H", 8),
            ("W", 8),
            ("temb", 32),
            ("groups", 4),
            ("shortcut", False),
        ),
        "fp32",
    )  # 6 channels, 4 groups
    rep = build_table(
        entry, torch_backend(), tmp_path, "host", keys=[bad, *good], retries=1, progress=False
    )
    assert (rep.measured, rep.failed) == (3, 1)
    table = LatencyTable.load(tmp_path, "host", "torch")
    assert bad.id in table.failed() and "group" in table.failed()[bad.id].error.lower()
    # a later build skips it unless asked to retry failed keys
    assert (
        build_table(entry, torch_backend(), tmp_path, "host", keys=[bad], progress=False).measured
        == 0
    )
    assert (
        build_table(
            entry, torch_backend(), tmp_path, "host", keys=[bad], retry_failed=True, progress=False
        ).failed
        == 1
    )


def test_foreign_or_changed_tables_are_refused(tmp_path):
    entry = SPACES.get(ENTRY)
    keys = SpaceStructure(entry.space()).block_keys()[:2]
    build_table(entry, torch_backend(), tmp_path, "host", keys=keys, progress=False)
    with pytest.raises(ConfigError, match="settings"):
        build_table(
            entry,
            BACKENDS.get("torch")(threads=2, warmup=1, runs=3),
            tmp_path,
            "host",
            keys=keys,
            progress=False,
        )
    table = LatencyTable.load(tmp_path, "host", "torch")
    meta = json.loads(table.meta_path.read_text())
    meta["fingerprint"] = {"kind": "phone", "model": "Pixel 8"}
    table.meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="fingerprint"):
        build_table(entry, torch_backend(), tmp_path, "host", keys=keys, progress=False)


def test_rounds_keep_each_keys_best_round_and_time_inside_the_quiet_context(tmp_path):
    import contextlib

    from latency_tables.backends.torch_eager import TorchBackend

    class Recording(TorchBackend):
        """The torch backend, keeping every measurement it returns, in call order."""

        def __init__(self) -> None:
            super().__init__(threads=1, warmup=1, runs=3)
            self.seen: list = []

        def prepare(self, module, inputs, plan):
            run = super().prepare(module, inputs, plan)

            def timed():
                self.seen.append(run())
                return self.seen[-1]

            return timed

    entry = SPACES.get(ENTRY)
    keys = [k for k in SpaceStructure(entry.space()).block_keys() if k.kernel == "fp32"][:5]
    entered = []

    @contextlib.contextmanager
    def timing():
        entered.append(1)
        yield

    backend = Recording()
    rep = build_table(
        entry,
        backend,
        tmp_path,
        "host",
        keys=keys,
        rounds=3,
        chunk=2,
        timing=timing,
        progress=False,
    )
    assert (rep.measured, rep.failed) == (5, 0)
    assert len(entered) == 3  # one timing spell per chunk of 2 keys
    rounds = backend.seen
    assert len(rounds) == 3 * 5
    table = LatencyTable.load(tmp_path, "host", "torch")
    assert table.meta["build_rounds"] == 3
    # chunks [k0 k1] [k2 k3] [k4], each timed round by round: k0 k1 k0 k1 k0 k1 k2 k3 …
    order = [0, 1] * 3 + [2, 3] * 3 + [4] * 3
    for i, key in enumerate(keys):
        mine = [m for m, j in zip(rounds, order) if j == i]
        best = min(mine, key=lambda m: m.min_ms)
        got = table.get(key).measurement  # that round's row (its median too), as the CSV keeps it
        assert (got.min_ms, got.median_ms) == pytest.approx((best.min_ms, best.median_ms), rel=1e-5)
    with pytest.raises(ConfigError, match="rounds"):
        build_table(entry, backend, tmp_path, "host", keys=keys, rounds=0, progress=False)
