"""`nas latency adapt`: the transfer fit (eq. 1–2 of `latency_tables.transfer`), the adapted
table a search uses, and a resumable adaptation on the host and over the stand-in adb."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stand_in import load_state, update_state

import search_spaces  # noqa: F401
from latency_tables.adapt import adapt, end_to_end_log_path, spread_samples
from latency_tables.adb import DeviceError
from latency_tables.backends import BACKENDS
from latency_tables.build import build_table
from latency_tables.cost import CostModel
from latency_tables.kernels import kernel_of
from latency_tables.table import LatencyTable
from latency_tables.transfer import (
    TransferModel,
    adapted_entries,
    fit_transfer,
    group_of,
    read_log,
)
from nas import SPACES
from nas.app.cli import main
from nas.errors import ConfigError

SPACE = "test_mobile_dit"
SPEED = ["--warmup", "1", "--runs", "3"]


@pytest.fixture(scope="module")
def host_table(tmp_path_factory) -> LatencyTable:
    """A measured torch table of the tiny DiT space: the source device of the adaptations."""
    root = tmp_path_factory.mktemp("tables")
    backend = BACKENDS.get("torch")(threads=1, warmup=1, runs=3)
    build_table(SPACES.get(SPACE), backend, root, "host", progress=False)
    return LatencyTable.load(root, "host", "torch")


def synthetic_sums(n: int, groups: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"g{j}": rng.uniform(0.5, 5.0, n) for j in range(groups)}


def test_fit_recovers_known_group_scales_and_overhead():
    sums = synthetic_sums(20, 3, seed=0)
    scales = {"g0": 0.5, "g1": 2.0, "g2": 1.2}
    measured = sum(scales[g] * s for g, s in sums.items()) + 3.0
    model, loo = fit_transfer(["a/x"], [sums], measured)
    assert model.overhead_ms == pytest.approx(3.0, rel=1e-3)
    for g, s in scales.items():
        assert model.scale("a/x", g) == pytest.approx(s, rel=1e-3)
    assert np.max(np.abs(loo - measured) / measured) < 1e-3  # noiseless: LOO is exact
    assert model.scale("a/x", "unseen") == model.base_scale["a/x"]  # the common scale


def test_a_per_block_cost_the_source_lacks_is_found_and_predicts_held_out_archs():
    """The new runtime pays 0.4 ms per resnet block (dispatch) on top of 2x the source:
    with block counts the fit recovers it; without, it cannot predict deep archs."""
    rng = np.random.default_rng(6)

    def draw(n):
        sums = synthetic_sums(n, 2, seed=int(rng.integers(1 << 30)))
        counts = {"resnet": rng.integers(2, 30, n).astype(float), "attn": np.full(n, 4.0)}
        return sums, counts, 2.0 * (sums["g0"] + sums["g1"]) + 0.4 * counts["resnet"] + 1.0

    sums, counts, measured = draw(12)
    model, _ = fit_transfer(["a/x"], [sums], measured, counts)
    assert model.per_block_ms["resnet"] == pytest.approx(0.4, rel=1e-2)
    assert "attn" not in model.per_block_ms  # constant here: the overhead c holds it
    assert model.overhead_ms == pytest.approx(1.0, rel=5e-2)
    held_sums, held_counts, truth = draw(40)
    with_b = model.predict({"a/x": held_sums}, held_counts)
    without, _ = fit_transfer(["a/x"], [sums], measured)
    no_b = without.predict({"a/x": held_sums})
    assert np.max(np.abs(with_b - truth) / truth) < 0.01
    assert np.max(np.abs(no_b - truth) / truth) > 0.05
    with pytest.raises(ValueError, match="block counts"):
        model.predict({"a/x": held_sums})


def test_with_few_noisy_runs_the_fit_generalises():
    """5 runs, 6 groups, 5 % noise, a device uniformly 3x slower: per-group scales are not
    identifiable; the fit still predicts held-out architectures within noise."""
    sums = synthetic_sums(5, 6, seed=1)
    truth = 3.0 * sum(sums.values())
    measured = truth * np.exp(0.05 * np.random.default_rng(2).standard_normal(5))
    model, _ = fit_transfer(["a/x"], [sums], measured)
    held = synthetic_sums(50, 6, seed=3)
    pred = model.predict({"a/x": held})
    true = 3.0 * sum(held.values())
    assert np.mean(np.abs(pred - true) / true) < 0.1


def test_two_sources_the_new_device_follows_the_one_it_resembles():
    a, b = synthetic_sums(15, 2, seed=4), synthetic_sums(15, 2, seed=5)
    measured = 0.7 * (b["g0"] + b["g1"])  # the new device is the second source, faster
    model, loo = fit_transfer(["a/x", "b/y"], [a, b], measured)
    assert np.mean(np.abs(loo - measured) / measured) < 0.05
    assert model.base_scale["b/y"] > 5 * model.base_scale["a/x"]
    with pytest.raises(ConfigError, match="at least 3"):
        fit_transfer(["a/x"], [{"g0": np.ones(2)}], np.ones(2))


def test_adapted_table_scales_each_key_by_its_group_and_adds_the_overhead(host_table, tmp_path):
    space = SPACES.get(SPACE).space()
    groups = sorted({group_of(e.key.kind, e.key.kernel) for e in host_table.entries()})
    scales = {g: 1.0 + 0.5 * i for i, g in enumerate(groups)}
    src = "host/torch"
    model = TransferModel((src,), {src: 1.0}, {src: scales}, overhead_ms=4.0, lam=1.0, n_fit=10)
    entries = adapted_entries(model, [host_table])
    assert len(entries) == len(host_table.ok())
    for e in entries[:20]:
        s = scales[group_of(e.key.kind, e.key.kernel)]
        assert e.measurement.min_ms == pytest.approx(
            s * host_table.get(e.key.id).measurement.min_ms
        )
    meta = {k: host_table.meta[k] for k in ("fingerprint", "settings", "kernel_map", "spaces")}
    new = LatencyTable.create(tmp_path, "newdev", "torch", {**meta, "overhead_ms": 4.0})
    new.add_many(entries)
    samples = space.sample_many(30, rng=0)
    got = CostModel(space, LatencyTable.load(tmp_path, "newdev", "torch"), strict=True)
    ref = CostModel(space, host_table, strict=True)
    cost_new = got.costs(samples, ("table_ms",))["table_ms"]
    cost_ref = ref.costs(samples, ("table_ms",))["table_ms"]
    assert np.all(cost_new > cost_ref + 4.0 - 1e-9)  # every scale ≥ 1, plus the overhead
    assert got.overhead_ms == 4.0


def test_spread_samples_cover_the_latency_range(host_table):
    space = SPACES.get(SPACE).space()
    cost = CostModel(space, host_table, strict=True)
    picks = spread_samples(space, cost, BACKENDS.get("torch")(), 6, seed=0)
    lat = cost.costs(picks, ("table_ms",))["table_ms"]
    pool = cost.costs(space.sample_many(400, rng=1), ("table_ms",))["table_ms"]
    assert np.all(np.diff(lat) >= 0) and len({json.dumps(p, sort_keys=True) for p in picks}) == 6
    assert lat[0] < np.quantile(pool, 0.2) and lat[-1] > np.quantile(pool, 0.8)


def test_cli_adapt_to_two_threads_writes_a_table_search_can_use(host_table, tmp_path, capsys):
    root = host_table.csv_path.parent.parent
    opts = ["--space", SPACE, "--backend", "torch", "--tables", str(root)]
    argv = ["latency", "adapt", *opts, "--device", "host-2t", "--from", "host/torch"]
    argv += ["--threads", "2", *SPEED, "--n", "5", "--rounds", "2"]
    assert main(argv) == 0
    brief = json.loads(capsys.readouterr().out)
    assert brief["keys"] == len(host_table.ok()) and brief["from"] == ["host/torch"]
    assert set(brief["validation"]) == {"leave_one_out", "source_unchanged"}
    table = LatencyTable.load(root, "host-2t", "torch")
    adapted = table.meta["adapted"]
    assert adapted["n"] == 5 and len(adapted["archs"]) == 5
    assert table.meta["settings"]["threads"] == 2
    log_path = end_to_end_log_path(root, "host-2t", "torch", SPACE)
    assert len(read_log(log_path)) == 10  # 5 archs × 2 rounds, each stored as measured
    CostModel(SPACES.get(SPACE).space(), table, strict=True)  # the search's view loads
    # a second adapt into the same table is refused and names the fix
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    # with the table gone the log stays: the refit measures nothing again
    table.csv_path.unlink()
    table.meta_path.unlink()
    assert main(argv) == 0
    capsys.readouterr()
    assert len(read_log(log_path)) == 10
    assert main([*argv[:-2], "--rounds", "2", "--from", "nope"]) == 2
    assert "DEVICE/BACKEND" in capsys.readouterr().err


@pytest.mark.slow
def test_adapt_over_adb_resumes_after_the_phone_is_lost(host_table, phone, tmp_path):
    """The phone drops mid-adaptation: the runs measured before are kept, and the rerun
    benchmarks only the missing one. Every model has one float precision (fp16 is a
    model-wide switch of benchmark_model)."""
    entry = SPACES.get(SPACE)

    def run():
        backend = BACKENDS.get("adb")(
            threads=1, warmup=1, runs=3, benchmark_binary=str(phone.binary)
        )
        return adapt(
            entry, backend, [host_table], tmp_path, "pixel8", n=3, rounds=1, progress=False
        )

    update_state(phone.state_dir, disconnect_after_benchmarks=2)
    with pytest.raises(DeviceError, match=r"(?i)device.*(not found|disconnected|cable)"):
        run()
    where = end_to_end_log_path(tmp_path, "pixel8", "adb", SPACE)
    kept = len(read_log(where))
    assert 0 < kept < 3  # what was measured before the phone went away is on disk
    update_state(phone.state_dir, disconnect_after_benchmarks=None, benchmarks_run=0)
    report = run()
    assert load_state(phone.state_dir)["benchmarks_run"] == 3 - kept  # only the missing runs
    runs = read_log(where)
    assert len(runs) == 3 and len(report["archs"]) == 3
    space = entry.space()
    for r in runs:
        floats = {
            kernel_of(layer.quant)
            for layer in space.freeze(r["sample"]).layers
            if kernel_of(layer.quant) in ("fp16", "fp32")
        }
        assert len(floats) <= 1, f"a model mixing fp16 and fp32 reached the phone: {floats}"
    assert LatencyTable.load(tmp_path, "pixel8", "adb").meta["adapted"]["from"] == ["host/torch"]
