"""The budget filter: every registered strategy wrapped, real cost model, bounded failure."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from strategy_problems import ASK_TELL, OBJECTIVES, build, choices_space, toy_metrics

import nas
from latency_tables.cost import CostModel
from nas.errors import ConfigError, InfeasibleBudgetError
from nas.strategies import BudgetFilter, make_strategy


@pytest.fixture(scope="module")
def unet():
    space = nas.get_space("test_mobile_unet").space()
    cost = CostModel(space)  # params / macs / bytes need no latency table
    params = cost.costs(space.sample_many(200, rng=0), ("params",))["params"]
    return space, cost, float(np.quantile(params, 0.4))


def _params(cost):
    return lambda samples: cost.costs(samples, ("params", "bytes"))


@pytest.mark.parametrize("name", ASK_TELL)
def test_wrapped_strategies_ask_only_within_budget_and_restore(name, unet):
    space, cost, budget = unet
    f = BudgetFilter(build(name, space, seed=5), _params(cost), {"params": budget}, n_probe=128)
    asked = []
    for _ in range(6):
        s = f.ask()
        asked.append(s)
        f.tell(s, toy_metrics(space, s))
    got = cost.costs(asked, ("params",))["params"]
    assert (got <= budget).all()
    assert f.n_rejected > 0  # 60 % of random architectures are over this budget
    assert 0.4 < f.acceptance < 0.8
    state = json.loads(json.dumps(f.state_dict()))
    g = BudgetFilter(build(name, space, seed=5), _params(cost), {"params": budget}, n_probe=128)
    g.load_state_dict(state)
    assert [f.ask() for _ in range(3)] == [g.ask() for _ in range(3)]


def test_rejections_reach_optuna_as_constraint_violations(unet):
    space, cost, budget = unet
    inner = make_strategy("nsga2", space, {"a": "min", "params": "min"}, 0, population_size=4)
    f = BudgetFilter(inner, _params(cost), {"params": budget}, n_probe=64)
    for _ in range(4):
        s = f.ask()
        f.tell(s, {"a": 1.0, "params": float(cost.costs([s], ("params",))["params"][0])})
    trials = inner.study.trials
    rejected = [t for t in trials if "budget.params" in t.constraints]
    assert len(rejected) == f.n_rejected > 0
    for t in rejected:
        assert t.state.name == "COMPLETE" and t.constraints["budget.params"] > 0
        # the known cost stands in for the objective that is a cost
        assert t.values[1] > budget
    assert sum(t.constraints == {} for t in trials) == 4


def test_an_impossible_budget_fails_fast_naming_the_fix(unet):
    space, cost, _ = unet
    f = BudgetFilter(make_strategy("random", space, OBJECTIVES), _params(cost), {"params": 1000})
    t0 = time.perf_counter()
    with pytest.raises(InfeasibleBudgetError) as e:
        f.ask()
    assert time.perf_counter() - t0 < 10
    cheapest = cost.costs([space.min()], ("params",))["params"][0]
    msg = str(e.value)
    assert "params" in msg and f"{cheapest:.6g}" in msg and "Raise the budget" in msg


def test_a_strategy_that_never_meets_the_budget_raises_after_max_tries():
    space = choices_space()

    # cost = Σ option indices: only space.min() costs 0, so the check passes but random
    # search finds it with probability 1/216 per ask
    def cost_fn(samples):
        return {"size": space.encode(samples, "index").sum(1).astype(float)}

    f = BudgetFilter(make_strategy("random", space, OBJECTIVES, 1), cost_fn, {"size": 0}, 25)
    assert f.check_feasible() == {"size": 0.0}
    with pytest.raises(InfeasibleBudgetError, match="25 architectures in a row"):
        f.ask()
    assert f.n_rejected == 25


def test_unknown_budget_names_and_nan_costs():
    space = choices_space()
    rs = make_strategy("random", space, OBJECTIVES)
    with pytest.raises(ConfigError, match="gives \\['size'\\]"):
        BudgetFilter(rs, lambda s: {"size": np.zeros(len(s))}, {"latency_ms": 1.0}).ask()
    with pytest.raises(InfeasibleBudgetError, match="NaN"):
        BudgetFilter(rs, lambda s: {"size": np.full(len(s), np.nan)}, {"size": 1.0}).ask()

    # NaN for some architectures (missing latency entries): those are never asked
    def partly_nan(samples):
        return {"size": np.array([np.nan if s["op"] == "skip" else 0.0 for s in samples])}

    f = BudgetFilter(make_strategy("random", space, OBJECTIVES, 2), partly_nan, {"size": 1.0})
    assert all(f.ask()["op"] != "skip" for _ in range(20))
    assert f.n_rejected > 0
