"""Keys, table format and the vectorized / differentiable cost model.

The table here is filled with synthetic numbers (a deterministic function of
the key), which is what a test of the arithmetic needs; real measurements are
tested with the backends.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch
from cost_kit import one_hot_probs

import search_spaces  # noqa: F401
from latency_tables.calibration import Calibration
from latency_tables.cost import CostModel, soft_choice
from latency_tables.keys import KERNELS, BlockKey, block_kernel_shares, kernel_of, keys_of
from latency_tables.measurement import Measurement
from latency_tables.residual import WEIGHT_BYTES
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable
from nas import SPACES, ConfigError, MissingLatencyEntryError

SPACE_NAMES = ["test_mobile_unet", "test_mobile_unet_attn", "test_mobile_dit"]


def fake_ms(key: BlockKey) -> float:
    h = int(hashlib.sha256(key.id.encode()).hexdigest()[:8], 16)
    return 0.1 + (h % 10_000) / 1000.0


@pytest.fixture(scope="module", params=SPACE_NAMES)
def setup(request, tmp_path_factory):
    space = SPACES.get(request.param).space()
    st = SpaceStructure(space)
    root = tmp_path_factory.mktemp("tables")
    table = LatencyTable.create(root, "dev", "fake", {"fingerprint": {"kind": "test"}})
    for k in st.block_keys():
        table.add(Entry(k, Measurement(fake_ms(k), fake_ms(k), 0.0, 5, fake_ms(k))))
    return space, st, root, table


def reference_latency(space, sample) -> float:
    return sum(share * fake_ms(k) for k, share in keys_of(space.freeze(sample)))


def test_key_id_round_trip_and_kernel_shares(setup):
    space, st, _, _ = setup
    for k in st.block_keys()[:50]:
        assert BlockKey.parse(k.id) == k
    with pytest.raises(ConfigError, match="not a latency key"):
        BlockKey.parse("garbage")
    for b in space.freeze(space.sample(0)).blocks:
        assert sum(block_kernel_shares(b).values()) == pytest.approx(1.0)


def test_keys_cover_random_architectures(setup):
    space, st, _, _ = setup
    keys = set(st.block_keys())
    for s in space.sample_many(100, rng=1):
        for k, _ in keys_of(space.freeze(s)):
            assert k in keys, f"{k.id} not enumerated by keys(space)"


def test_vectorized_predict_equals_per_block_sum(setup):
    space, _st, root, _ = setup
    table = LatencyTable.load(root, "dev", "fake")  # through the file format
    cm = CostModel(space, table)
    samples = [space.min(), space.max(), *space.sample_many(40, rng=2)]
    got = cm.predict(samples)
    want = np.array([reference_latency(space, s) for s in samples])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    costs = cm.costs(samples)
    for s, p, m, b in zip(samples[:5], costs["params"], costs["macs"], costs["bytes"]):
        spec = space.freeze(s)
        assert p == sum(layer.params for layer in spec.layers)
        assert m == sum(layer.macs for layer in spec.layers)
        assert b == pytest.approx(
            sum(layer.params * layer.quant.w_bits / 8 for layer in spec.layers)
        )
    assert costs["bytes"][0] < costs["bytes"][1]  # min sample is the lightest


def test_strict_missing_key_names_the_command(setup):
    space, st, root, _table = setup
    partial = LatencyTable.create(root, "partial", "fake", {})
    for k in st.block_keys()[1:]:
        partial.add(Entry(k, Measurement(1, 1, 0, 1, 1)))
    with pytest.raises(
        MissingLatencyEntryError, match=r"lacks 1 key.*nas latency build --device partial"
    ):
        CostModel(space, partial)
    lenient = CostModel(space, partial, strict=False)
    assert lenient.missing == [st.block_keys()[0].id]
    assert np.isnan(lenient.predict(space.sample_many(200, rng=3))).any()


def test_expected_latency_is_exact_on_one_hot_and_differentiable(setup):
    space, _st, _, table = setup
    cm = CostModel(space, table)
    s = space.sample(4)
    onehot = one_hot_probs(space, s)
    assert cm.expected(onehot).item() == pytest.approx(cm.predict([s])[0], rel=1e-9)
    logits = {lab: torch.zeros(len(space[lab]), requires_grad=True) for lab in space.labels}
    e = cm.expected({lab: torch.softmax(v, 0) for lab, v in logits.items()})
    e.backward()
    assert any(v.grad is not None and v.grad.abs().sum() > 0 for v in logits.values())
    # Under uniform probabilities E[T] is the mean over samples drawn independently.
    mc = cm.predict(space.sample_many(4000, rng=5)).mean()
    assert e.item() == pytest.approx(mc, rel=0.05)


def reference_features(spec, kernel_map=None) -> np.ndarray:
    """weight_mb, act_mb, blocks, layers of one spec, summed layer by layer (no flat
    tables)."""
    kernel_map = kernel_map or {}
    w = a = 0.0
    for layer in spec.layers:
        k = kernel_map.get(kernel_of(layer.quant), kernel_of(layer.quant))
        w += layer.params * WEIGHT_BYTES[k] / 1e6
        a += (layer.in_features + layer.out_features) * layer.positions * 4 / 1e6
    return np.array([w, a, len(spec.blocks), len(spec.layers)])


def test_calibrated_cost_model_applies_the_calibration_everywhere(setup):
    space, _st, _, table = setup
    specs = [space.freeze(s) for s in space.sample_many(50, rng=2)]
    names = ("weight_mb", "act_mb", "blocks", "layers")
    weights = {"weight_mb": 0.05, "act_mb": 0.2, "blocks": -0.01, "layers": 0.003}
    cal = Calibration(1.3, weights, 0.7, 30)
    raw, cm = CostModel(space, table), CostModel(space, table, calibration=cal)
    feats = raw.features(specs, names)
    # the vectorized features are the per-sample sums over layers and blocks
    np.testing.assert_allclose(feats, np.stack([reference_features(s) for s in specs]))
    costs = cm.costs(specs, ("latency_ms", "table_ms"))
    np.testing.assert_allclose(costs["table_ms"], raw.predict(specs), rtol=1e-12)
    np.testing.assert_allclose(costs["latency_ms"], cal.apply(raw.predict(specs), feats))
    # the expectation is calibrated too: exact on one-hot probabilities (depth labels
    # remove blocks, so the per-block terms must follow P(block present))
    for s in specs[:3]:
        onehot = one_hot_probs(space, s.sample_dict)
        assert cm.expected(onehot).item() == pytest.approx(cm.predict([s])[0], rel=1e-9)
    uniform = {lab: torch.full((len(space[lab]),), 1 / len(space[lab])) for lab in space.labels}
    mc = cm.predict(space.sample_many(4000, rng=5)).mean()
    assert cm.expected(uniform).item() == pytest.approx(mc, rel=0.05)


def test_weight_bytes_follow_the_kernels_the_runtime_runs(setup):
    space, _st, root, _table = setup
    # a runtime that runs every kernel class as fp32 reloads 4 bytes per weight
    aliased = LatencyTable.create(
        root / "aliased", "dev", "fake", {"kernel_map": dict.fromkeys(KERNELS, "fp32")}
    )
    for k in SpaceStructure(space).block_keys():
        aliased.add(Entry(k, Measurement(1.0, 1.0, 0.0, 5, 1.0)))
    specs = [space.freeze(space.min())]
    cm = CostModel(space, aliased)
    got = cm.features(specs, ("weight_mb",))[0, 0]
    assert got == pytest.approx(sum(layer.params for layer in specs[0].layers) * 4 / 1e6)


def test_soft_choice_interpolates_between_options():
    p = soft_choice([16, 32, 64], torch.tensor(40.0, requires_grad=True))
    assert p.tolist() == pytest.approx([0.0, 0.75, 0.25])
    assert soft_choice([16, 32, 64], torch.tensor(100.0)).tolist() == pytest.approx([0, 0, 1])


def test_predict_throughput_is_vectorized():
    space = SPACES.get("mobile_unet").space()
    st = SpaceStructure(space)
    cm = CostModel(space, None, structure=st)
    idx = space.encode(space.sample_many(1000, rng=0), kind="index")
    idx = np.repeat(idx, 20, axis=0)  # 20k samples
    t = time.perf_counter()
    out = cm.predict_index(idx, ("params", "macs", "bytes"))
    assert len(out["params"]) == 20_000 and (time.perf_counter() - t) < 30  # no per-sample loop


def test_table_refuses_corrupt_and_foreign_files(tmp_path):
    t = LatencyTable.create(tmp_path, "d", "b", {})
    t.add(Entry(BlockKey("resnet", (("in", 8),), "fp32"), Measurement(1, 1, 0, 3, 1)))
    # a torn last line (killed mid-write) is ignored
    with open(t.csv_path, "a") as f:
        f.write("resnet[in=16]@fp32,resnet,fp32,{},1.0")
    assert len(LatencyTable.load(tmp_path, "d", "b")) == 1
    t.csv_path.write_text(t.csv_path.read_text() + "\nnot,a,row\n")
    with pytest.raises(ConfigError, match=r"b\.csv:\d+: corrupted row"):
        LatencyTable.load(tmp_path, "d", "b")
    t.meta_path.write_text('{"schema_version": 99}')
    with pytest.raises(ConfigError, match="schema_version 99"):
        LatencyTable.load(tmp_path, "d", "b")
    with pytest.raises(ConfigError, match="nas latency build --device x --backend b"):
        LatencyTable.load(tmp_path, "x", "b")
