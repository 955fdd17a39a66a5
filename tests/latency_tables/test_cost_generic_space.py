"""The cost model of spaces that are not registered families: graceful, explicit degradation.

A space declared with `SearchSpace.from_choices` (a NAS-benchmark cell, say) freezes to
specs without blocks: its cost model must build, say that it knows no cost, and refuse a
cost with an error that teaches what to do. A space whose builder maps only some labels to
layers costs exactly its declared layers. Registered families keep their costs. Tables are
synthetic (a deterministic function of the key), as in `test_cost_model`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from cost_kit import one_hot_probs

import search_spaces  # noqa: F401  (registers the families)
from latency_tables.cost import CostModel
from latency_tables.keys import BlockKey, keys_of
from latency_tables.measurement import Measurement
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable
from nas import SPACES, ConfigError
from nas.space import SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, StageSpec

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool"]
LAYER_COSTS = ("params", "macs", "bytes")
WIDTH, POSITIONS = 16, 64


def fake_ms(key: BlockKey) -> float:
    h = int(hashlib.sha256(key.id.encode()).hexdigest()[:8], 16)
    return 0.1 + (h % 10_000) / 1000.0


def synthetic_table(root: Path, space: SearchSpace) -> LatencyTable:
    """A table with every key of `space`, timed by `fake_ms`."""
    table = LatencyTable.create(root, "dev", "fake", {"fingerprint": {"kind": "test"}})
    for k in SpaceStructure(space).block_keys():
        ms = fake_ms(k)
        table.add(Entry(k, Measurement(ms, ms, 0.0, 5, ms)))
    return table


def bench_space() -> SearchSpace:
    """A NAS-benchmark-like cell: six edges, five operations, no structure."""
    return SearchSpace.from_choices({f"edge.{i}": OPS for i in range(6)}, name="bench201")


def cell_space(with_layers: bool = True) -> SearchSpace:
    """Six edges, built: a conv edge is a block with one layer, an avgpool edge a block
    without layers, none/skip no block; ``train.lr`` shapes nothing (a neutral label).
    Without layers, every edge is a layerless pool block."""
    choices = {f"edge.{i}": OPS for i in range(6)} | {"train.lr": [0.001, 0.01]}

    def build(space: SearchSpace, sample: dict) -> ArchSpec:
        blocks = []
        for i in range(6):
            op = sample[f"edge.{i}"]
            if op.startswith("conv") and with_layers:
                layer = LayerSpec(f"edge.{i}.conv", op, WIDTH, WIDTH, positions=POSITIONS)
                blocks.append(BlockSpec(f"edge.{i}", "conv", (("op", op), ("c", WIDTH)), (layer,)))
            elif op != "none" and op != "skip":
                blocks.append(BlockSpec(f"edge.{i}", "pool", (("c", WIDTH),)))
        stages = (StageSpec("cell", tuple(blocks)),)
        return ArchSpec(space.name, space.version, tuple(sample.items()), stages)

    name = "cell" if with_layers else "pools"
    return SearchSpace(choices, name=name, builder=build)


# -- a from_choices space ----------------------------------------------------------------------
def test_from_choices_space_builds_a_cost_model_that_knows_no_cost():
    space = bench_space()
    cm = CostModel(space)
    assert cm.has_structure is False
    assert cm.available_costs == ()
    samples = space.sample_many(8, rng=0)
    # nothing asked, nothing computed (and no numpy error on the empty gather)
    assert cm.costs(samples, ()) == {}
    for what in (LAYER_COSTS, ("params",), ("latency_ms",), ("table_ms",)):
        with pytest.raises(ConfigError) as err:
            cm.costs(samples, what)
        msg = str(err.value)
        for part in ("'bench201'", "no layer structure", "from_choices", "cost_fn"):
            assert part in msg, (what, part, msg)
    with pytest.raises(ConfigError, match="unknown cost"):
        cm.costs(samples, ("flops",))


def test_from_choices_space_has_no_latency_even_with_a_table(tmp_path):
    space = bench_space()
    table = LatencyTable.create(tmp_path, "dev", "fake", {})
    table.add(Entry(BlockKey("conv", (("c", 16),), "fp32"), Measurement(1, 1, 0, 1, 1)))
    cm = CostModel(space, table)  # strict, yet the space needs no key of the table
    assert cm.available_costs == ()
    assert cm.missing == []
    with pytest.raises(ConfigError, match="no layer structure"):
        cm.predict(space.sample_many(3, rng=1))
    probs = {lab: torch.full((len(OPS),), 1 / len(OPS)) for lab in space.labels}
    with pytest.raises(ConfigError, match="no layer structure"):
        cm.expected(probs)


def test_blocks_without_layers_are_no_structure(tmp_path):
    """Blocks but no conv/linear layer anywhere: params would be 0 for every sample, which is
    not a cost but a missing declaration, so the space counts as structureless."""
    space = cell_space(with_layers=False)
    cm = CostModel(space, synthetic_table(tmp_path, space))
    assert cm.structure.blocks  # the blocks are there …
    assert cm.has_structure is False  # … but no layer
    assert cm.available_costs == ()
    with pytest.raises(ConfigError, match="'pools' has no layer structure"):
        cm.costs([space.max()], ("params",))


# -- partial structure: some labels map to layers ----------------------------------------------
def test_partial_structure_costs_exactly_the_declared_layers(tmp_path, caplog):
    space = cell_space()
    with caplog.at_level(logging.INFO, logger="latency_tables.cost"):
        cm = CostModel(space, synthetic_table(tmp_path, space))
    assert cm.has_structure is True
    assert cm.available_costs == (*LAYER_COSTS, "table_ms", "latency_ms")
    assert cm.structure.neutral_labels == ["train.lr"]
    assert "train.lr" in caplog.text  # the user learns that a label moves no cost
    samples = [space.min(), space.max(), *space.sample_many(60, rng=2)]
    costs = cm.costs(samples, cm.available_costs)
    for i, s in enumerate(samples):
        spec = space.freeze(s)
        assert costs["params"][i] == sum(layer.params for layer in spec.layers)
        assert costs["macs"][i] == sum(layer.macs for layer in spec.layers)
        assert costs["bytes"][i] == pytest.approx(
            sum(layer.params * layer.quant.w_bits / 8 for layer in spec.layers)
        )
        want_ms = sum(share * fake_ms(k) for k, share in keys_of(spec))
        assert costs["latency_ms"][i] == pytest.approx(want_ms, rel=1e-9)
    assert costs["params"][0] == 0.0  # all edges "none": no layer, no block
    assert costs["latency_ms"][0] == 0.0
    # hand-computed edges: six conv3x3 edges, then six avgpool edges (no MACs where the
    # edge's other options convolve: each costs its fp32 entry, as `keys_of` says)
    all_conv = dict(space.min(), **{f"edge.{i}": "conv3x3" for i in range(6)})
    all_pool = dict(space.min(), **{f"edge.{i}": "avgpool" for i in range(6)})
    edge = cm.costs([all_conv, all_pool], ("params", "latency_ms"))
    conv_ms = fake_ms(BlockKey("conv", (("op", "conv3x3"), ("c", WIDTH)), "fp32"))
    pool_ms = fake_ms(BlockKey("pool", (("c", WIDTH),), "fp32"))
    assert edge["params"].tolist() == [6 * WIDTH * WIDTH * 9, 0.0]
    assert edge["latency_ms"] == pytest.approx([6 * conv_ms, 6 * pool_ms], rel=1e-9)
    # the differentiable expectation agrees on one-hot probabilities
    for s in samples[:10]:
        onehot = one_hot_probs(space, s)
        assert cm.expected(onehot).item() == pytest.approx(cm.predict([s])[0], rel=1e-9)
    # the neutral label changes no cost
    flipped = [dict(s, **{"train.lr": 0.01 if s["train.lr"] == 0.001 else 0.001}) for s in samples]
    again = cm.costs(flipped, cm.available_costs)
    for w in cm.available_costs:
        np.testing.assert_array_equal(again[w], costs[w])


# -- registered families are unchanged ---------------------------------------------------------
@pytest.mark.parametrize("name", ["test_mobile_unet", "test_mobile_dit"])
def test_registered_space_reports_layer_costs_without_a_table(name):
    space = SPACES.get(name).space()
    cm = CostModel(space)
    assert cm.has_structure is True
    assert cm.available_costs == LAYER_COSTS
    assert cm.structure.neutral_labels == []
    samples = [space.min(), space.max()]
    costs = cm.costs(samples, cm.available_costs)
    for w in LAYER_COSTS:
        assert costs[w][0] < costs[w][1], w  # the min sample is the lighter
    spec = space.freeze(space.max())
    assert costs["params"][1] == sum(layer.params for layer in spec.layers)
    with pytest.raises(ConfigError) as err:
        cm.costs(samples, ("latency_ms",))
    msg = str(err.value)
    for part in (f"{name!r} has no latency table", f"nas latency build --space {name}"):
        assert part in msg, (part, msg)
    assert "no layer structure" not in msg


def test_registered_space_with_a_table_reports_latency(tmp_path):
    space = SPACES.get("test_mobile_unet").space()
    cm = CostModel(space, synthetic_table(tmp_path, space))
    assert cm.available_costs == (*LAYER_COSTS, "table_ms", "latency_ms")
    samples = space.sample_many(5, rng=3)
    costs = cm.costs(samples, cm.available_costs)
    want = [sum(share * fake_ms(k) for k, share in keys_of(space.freeze(s))) for s in samples]
    np.testing.assert_allclose(costs["latency_ms"], want, rtol=1e-9)
    np.testing.assert_allclose(costs["table_ms"], want, rtol=1e-9)
