"""Search strategies and their registries: sample-based (ask/tell) and one-shot.

`STRATEGIES` (ask/tell) has built in ``random``, ``evolution`` (regularized
evolution), ``nsga2`` and ``tpe`` (Optuna); `BudgetFilter` wraps any of them with
cost budgets. Modules that other parts of mqnas add here (``predictor_guided``)
register into `STRATEGIES` when present. Optuna loads only when an Optuna strategy
is built.

`ONESHOT` holds the one-shot searches, which learn one architecture on the supernet
itself instead of asking for samples: ``differentiable`` (`nas.strategies.oneshot`:
DQSS quant strategies, PaS widths and depth under a latency penalty). Each is called
as ``ONESHOT.get(name)(supernet, task, cost_model, settings, device=..., progress=...)``
and returns a `OneShotResult`; `OneShotSettings` holds every hyperparameter.
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
from nas.strategies.oneshot import ONESHOT, OneShotResult, OneShotSearch
from nas.strategies.oneshot_settings import OneShotSettings
from nas.strategies.optuna_search import NSGA2Search, OptunaStrategy, TPESearch
from nas.strategies.random_search import RandomSearch

_OPTIONAL = ("predictor_guided",)

for _name in _OPTIONAL:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as e:  # only "the module is not there yet" is optional
        if e.name != f"{__name__}.{_name}":
            raise

__all__ = [
    "ONESHOT",
    "STRATEGIES",
    "BudgetFilter",
    "NSGA2Search",
    "Objective",
    "OneShotResult",
    "OneShotSearch",
    "OneShotSettings",
    "OptunaStrategy",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "TPESearch",
    "as_objectives",
    "make_strategy",
]
