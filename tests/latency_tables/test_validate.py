"""What `nas latency validate` measures besides random architectures, and how it times them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import search_spaces  # noqa: F401
from latency_tables.backends.torch_eager import TorchBackend
from latency_tables.cost import CostModel
from latency_tables.measurement import Measurement
from latency_tables.quiet import one_core
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable
from latency_tables.validate import searched_samples, stratified_samples
from nas import SPACES


@pytest.fixture(scope="module")
def unet_cost(tmp_path_factory):
    space = SPACES.get("test_mobile_unet").space()
    table = LatencyTable.create(tmp_path_factory.mktemp("t"), "dev", "fake", {})
    # every block costs its MACs (plus a little), so that depth and width both cost time
    for k in SpaceStructure(space).block_keys():
        ms = 0.01 + 1e-6 * sum(v for _, v in k.dims if isinstance(v, int))
        table.add(Entry(k, Measurement(ms, ms, 0.0, 5, ms)))
    return space, CostModel(space, table)


def test_searched_archs_are_deep_and_spread_over_the_budgets(unet_cost):
    space, cost = unet_cost
    backend = TorchBackend()
    searched = searched_samples(space, backend, cost, 6, seed=0, pool=200)
    assert len(searched) == 6
    randoms = space.sample_many(400, rng=1)
    depth = lambda xs: np.array([len(space.freeze(x).blocks) for x in xs])
    lat_r = cost.costs(randoms, ("table_ms",))["table_ms"]
    lat = cost.costs(searched, ("table_ms",))["table_ms"]
    # each is deeper than most random architectures as fast as it is, and the budgets
    # spread them over the latency range
    for d, t in zip(depth(searched), lat):
        assert d >= np.quantile(depth(randoms)[lat_r <= t], 0.75)
    assert lat[-1] > lat[0]
    again = searched_samples(space, backend, cost, 6, seed=0, pool=200)
    assert [space.freeze(s).hash for s in again] == [space.freeze(s).hash for s in searched]
    assert searched_samples(space, backend, cost, 0) == []


def test_one_core_pins_and_restores():
    before = os.sched_getaffinity(0)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    with one_core(-1) as core:
        assert os.sched_getaffinity(0) == {core} and core == max(before)
    assert os.sched_getaffinity(0) == before
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice
    with pytest.raises(ValueError, match="not one of"), one_core(len(before)):
        pass


def test_stratified_random_archs_cover_the_latency_range(unet_cost):
    space, cost = unet_cost
    backend = TorchBackend()
    picked = stratified_samples(space, backend, cost, 8, seed=3, pool=25)
    lat = cost.costs(picked, ("table_ms",))["table_ms"]
    pool = cost.costs(space.sample_many(200, rng=3), ("table_ms",))["table_ms"]
    assert len(picked) == 8 and np.all(np.diff(lat) >= 0)  # one per stratum, in order
    assert lat[0] <= np.quantile(pool, 0.2) and lat[-1] >= np.quantile(pool, 0.8)
    again = stratified_samples(space, backend, cost, 8, seed=3, pool=25)
    assert [space.freeze(s).hash for s in again] == [space.freeze(s).hash for s in picked]


def test_the_calibration_applies_by_default_when_the_table_has_one(tmp_path):
    import json

    from latency_tables.calibration import Calibration, calibration_path
    from latency_tables.opening import BackendSettings, TableSource, open_cost_model

    entry = SPACES.get("test_mobile_unet")
    space = entry.space()
    table = LatencyTable.create(tmp_path, "dev", "torch", {})
    for k in SpaceStructure(space).block_keys():
        table.add(Entry(k, Measurement(0.1, 0.1, 0.0, 5, 0.1)))
    src = TableSource(BackendSettings("torch"), device="dev", root=tmp_path)
    raw = open_cost_model(entry, src, measure_missing=False, calibrated=None)
    assert raw.calibration is None  # none saved yet: the raw sum
    cal = Calibration(2.0, {"layers": 0.01}, 0.5, 30)
    path = calibration_path(table.csv_path, space.name)
    path.write_text(json.dumps(cal.to_json()))
    used = open_cost_model(entry, src, measure_missing=False, calibrated=None)
    assert used.calibration == cal
    assert open_cost_model(entry, src, measure_missing=False, calibrated=False).calibration is None
    s = space.sample(0)
    assert used.predict([s])[0] == pytest.approx(
        cal.apply(raw.predict([s]), raw.features([s], ("layers",)))[0]
    )


def test_refit_reproduces_a_recorded_assessment_and_fits_other_models_on_it(unet_cost):
    import json

    from latency_tables.validate import assess, refit, save_report
    from nas import ConfigError

    space, cost = unet_cost
    specs = [space.freeze(s) for s in space.sample_many(14, rng=5)]
    table_ms = cost.costs(specs, ("table_ms",))["table_ms"]
    layers = cost.features(specs, ("layers",))[:, 0]
    rng = np.random.default_rng(0)
    truth = 1.3 * table_ms + 0.002 * layers + 0.05
    times = truth * (1 + rng.uniform(0, 0.05, (4, len(specs))))  # load only adds time
    report = assess(cost, specs, 10, times, ("layers",))
    assert report["n"] == 10 and report["n_searched"] == 4 and report["rounds"] == 4
    assert report["archs"][3]["rounds_ms"] == pytest.approx(times[:, 3])
    assert report["random"]["calibrated_loo"]["mape_pct"] < report["random"]["raw"]["mape_pct"]
    out = cost.table.csv_path.parent
    files = save_report(report, out, "fake")
    again = refit(cost, "fake", ("layers",))
    assert again["calibration"] == report["calibration"]
    assert again["searched"] == report["searched"] and again["refit_of"] == files[1]
    other = refit(cost, "fake", ("weight_mb", "act_mb"), nonneg_intercept=True)
    assert list(other["calibration"]["weights"]) == ["weight_mb", "act_mb"]
    assert other["calibration"]["intercept"] >= 0 and other["nonneg_intercept"]
    # a report recorded before per-round times were kept cannot be refitted
    old = json.loads(Path(files[1]).read_text())
    for a in old["archs"]:
        del a["rounds_ms"]
    Path(files[1]).write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="nas latency validate"):
        refit(cost, "fake")
