"""Spaces, toy objectives and builders shared by the strategy tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import nas
import search_spaces  # noqa: F401  (registers the test spaces)
from nas.space import SearchSpace
from nas.strategies import STRATEGIES, Strategy, make_strategy
from nas.strategies.predictor_guided import PredictorGuided
from nas.testing.strategies import OBJECTIVES, toy_metrics  # noqa: F401  (re-exported)
from nas.testing.strategies import toy_space as choices_space
from predictors.testing import small_predictor_guided as _small

# every registered ask/tell strategy; test_strategies.py fails until each has a test class
ASK_TELL = [n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), Strategy)]
BUILT_IN = ["random", "evolution", "nsga2", "tpe"]
# small populations so that a dozen asks get past the random warm-up
SMALL = {
    "evolution": {"population_size": 4},
    "nsga2": {"population_size": 4},
    "tpe": {"n_startup_trials": 3},
}


SPACES = {
    "choices": choices_space,
    "test_mobile_unet": lambda: nas.get_space("test_mobile_unet").space(),
}


def small_predictor_guided(
    space: SearchSpace, objectives: Any = OBJECTIVES, seed: int = 0
) -> PredictorGuided:
    """`predictors.testing.small_predictor_guided` with the kit's objectives by default."""
    return _small(space, objectives, seed)


#: Registered strategies whose injected components only the tests can build.
BUILDERS = {"predictor": small_predictor_guided}


def build(name: str, space: SearchSpace, objectives: Any = OBJECTIVES, seed: int = 0) -> Strategy:
    """The registered strategy `name`, small; skipped if it needs components we cannot make."""
    if name in BUILDERS:
        return BUILDERS[name](space, objectives, seed)
    try:
        return make_strategy(name, space, objectives, seed, **SMALL.get(name, {}))
    except TypeError as e:
        pytest.skip(
            f"strategy {name!r} cannot be built from (space, objectives, seed) alone ({e}); "
            "add a builder of its injected components to BUILDERS in strategy_problems.py"
        )


# -- a discretised ZDT1 (Zitzler, Deb & Thiele 2000): known front at x1..xK = 0 -------------
ZDT_K = 6


def zdt_space() -> SearchSpace:
    return SearchSpace.from_choices(
        {"x0": list(range(11)), **{f"x{i}": list(range(5)) for i in range(1, ZDT_K + 1)}},
        name="zdt1_grid",
    )


def zdt(sample: Mapping[str, Any]) -> dict[str, float]:
    """f1 = x0, f2 = g · (1 − sqrt(f1 / g)), g = 1 + 9 · mean(x1..xK); both minimized."""
    f1 = sample["x0"] / 10
    g = 1 + 9 * np.mean([sample[f"x{i}"] / 4 for i in range(1, ZDT_K + 1)])
    return {"f1": float(f1), "f2": float(g * (1 - np.sqrt(f1 / g)))}
