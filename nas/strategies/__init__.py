"""Search strategies and their registries: sample-based (ask/tell) and one-shot.

`STRATEGIES` (ask/tell) has built in ``random``, ``evolution`` (regularized
evolution), ``nsga2`` and ``tpe`` (Optuna); `BudgetFilter` wraps any of them with
cost budgets. Modules that other parts of mqnas add here (``predictor_guided``)
register into `STRATEGIES` when present. Optuna loads only when an Optuna strategy
is built, or on first access to `StrategySampler` (`nas.strategies.optuna_sampler`: any
ask/tell strategy as an Optuna sampler, for Optuna studies and Ray Tune's OptunaSearch).

`ONESHOT` holds the one-shot searches, which learn one architecture on the supernet
itself instead of asking for samples: ``differentiable`` (`nas.strategies.oneshot`:
DQSS quant strategies, PaS widths and depth under a latency penalty). Each is called
as ``ONESHOT.get(name)(supernet, task, cost_model, settings, device=..., progress=...)``
and returns a `OneShotResult`; `OneShotSettings` holds every hyperparameter.
"""

from __future__ import annotations

import importlib
from typing import Any

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

# Loaded on first access: their modules import Optuna, which `import nas.strategies` must not.
# Not in __all__ either, so that `from nas.strategies import *` does not load Optuna.
_LAZY = {"StrategySampler": "nas.strategies.optuna_sampler"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
