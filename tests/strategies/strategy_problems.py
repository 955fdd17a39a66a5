"""Spaces, toy objectives and builders shared by the strategy tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import nas
import search_spaces  # noqa: F401  (registers the test spaces)
from nas.space import SearchSpace
from nas.strategies import STRATEGIES, Objective, Strategy, make_strategy

# every registered ask/tell strategy; a new registration is tested automatically
ASK_TELL = [n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), Strategy)]
BUILT_IN = ["random", "evolution", "nsga2", "tpe"]
# small populations so that a dozen asks get past the random warm-up
SMALL = {
    "evolution": {"population_size": 4},
    "nsga2": {"population_size": 4},
    "tpe": {"n_startup_trials": 3},
}
OBJECTIVES = (Objective("a", "min"), Objective("b", "max"))


def choices_space() -> SearchSpace:
    """A user's own categorical space: mixed option types, a bool/int label, a fixed label."""
    return SearchSpace.from_choices(
        {
            "op": ["conv3", "conv5", "skip"],
            "width": [8, 16, 32, 64],
            "ratio": [0.25, 0.5, 1.0],
            "flag": [0, 1, True],  # 1 and True are distinct options
            "fixed": ["only"],
        },
        name="toy_choices",
    )


SPACES = {
    "choices": choices_space,
    "test_mobile_unet": lambda: nas.get_space("test_mobile_unet").space(),
}


def build(name: str, space: SearchSpace, objectives: Any = OBJECTIVES, seed: int = 0) -> Strategy:
    """The registered strategy `name`, small; skipped if it needs components we cannot make."""
    cls = STRATEGIES.get(name)
    if hasattr(cls, "for_testing"):
        return cls.for_testing(space, objectives, seed)
    try:
        return make_strategy(name, space, objectives, seed, **SMALL.get(name, {}))
    except TypeError as e:
        pytest.skip(
            f"strategy {name!r} cannot be built from (space, objectives, seed) alone ({e}); "
            "give it a classmethod for_testing(space, objectives, seed)"
        )


def toy_metrics(space: SearchSpace, sample: Mapping[str, Any]) -> dict[str, float]:
    """Two conflicting objectives of any space: a = Σ ordinal (min), b = first half's Σ (max)."""
    x = space.encode([sample], "ordinal")[0].astype(np.float64)
    half = max(1, len(x) // 2)
    return {"a": float(x.sum()), "b": float(x[:half].sum() - 0.5 * x[half:].sum())}


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
