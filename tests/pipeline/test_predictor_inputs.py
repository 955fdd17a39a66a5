"""What an experiment's predictor-guided strategy is built from (`predictor_inputs`): the
supernet's inherited-weight loss first, then the zero-cost labels the cost model has; the
kit's two rankers; cost features only for costs the model gives."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import yaml
from pipeline_helpers import ROOT

import search_spaces  # noqa: F401  (registers test_mobile_unet)
from latency_tables.cost import CostModel
from nas.app.build import build_task
from nas.app.pipeline import predictor_inputs
from nas.config import parse_config
from nas.evaluators import SupernetEvaluator
from nas.strategies import make_strategy
from nas.supernet import get_space


def test_an_experiment_without_a_table_gets_supernet_and_size_weak_labels():
    doc = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    doc["search"]["strategy"] = "predictor"
    cfg = parse_config(doc, "smoke.yaml")
    torch.manual_seed(0)
    net = get_space(cfg.space).supernet("cpu").eval()
    space = net.space
    cost = CostModel(space, None)  # no latency table: params, MACs, bytes only
    ctx = SimpleNamespace(cfg=cfg, supernet=lambda: net, progress=False)
    inputs = predictor_inputs(ctx, cost)
    assert inputs["encoder"].cost_features == ("params", "macs")
    samples = [space.min(), space.max()]
    w = inputs["weak_fn"](samples)
    expected = SupernetEvaluator(net, build_task(cfg, net)).score_many(samples, progress=False)
    np.testing.assert_allclose(w[:, 0], expected)  # column 0: the AceNAS weak label
    c = cost.costs(samples, ("params", "macs"))
    np.testing.assert_allclose(w[:, 1], -np.log(c["params"]))
    np.testing.assert_allclose(w[:, 2], np.log(c["macs"]))
    st = make_strategy(
        "predictor",
        space,
        {"val_loss": "min"},
        0,
        **inputs,
        pool_size=6,
        batch_size=2,
        candidates=16,
    )
    for i in range(4):
        s = st.ask()
        st.tell(s, {"val_loss": 1.0 + 0.1 * i})
    assert [m.name for m in st.members()] == ["lambdarank", "gp", "lambdarank", "gp"]
