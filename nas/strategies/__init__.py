"""Sample-based search strategies (ask/tell) and their registry.

Built in: ``random``, ``evolution`` (regularized evolution), ``nsga2`` and
``tpe`` (Optuna); `BudgetFilter` wraps any of them with cost budgets. Modules
that other parts of mqnas add here (``oneshot``, ``predictor_guided``) register
into `STRATEGIES` when present. Optuna loads only when an Optuna strategy is built.
"""

from __future__ import annotations

import importlib

from nas.strategies.base import (
    STRATEGIES,
    Objective,
    Strategy,
    as_objectives,
    make_strategy,
)
from nas.strategies.budget import BudgetFilter
from nas.strategies.evolution import RegularizedEvolution
from nas.strategies.optuna_search import NSGA2Search, OptunaStrategy, TPESearch
from nas.strategies.random_search import RandomSearch

_OPTIONAL = ("oneshot", "predictor_guided")

for _name in _OPTIONAL:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as e:  # only "the module is not there yet" is optional
        if e.name != f"{__name__}.{_name}":
            raise

__all__ = [
    "STRATEGIES",
    "BudgetFilter",
    "NSGA2Search",
    "Objective",
    "OptunaStrategy",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "TPESearch",
    "as_objectives",
    "make_strategy",
]
