"""Baseline predictors: scikit-learn regressors and zero-cost "bigger is better" rankers.

Regressors ("gbdt", "rf", "mlp"): `GradientBoostingRegressor` (Friedman 2001),
`RandomForestRegressor` (Breiman 2001) and `MLPRegressor` on standardized targets
(ŷ = μ_y + σ_y · f(X)), each seeded. Weak labels and validation sets are not used.

They are never pickled: `state_dict()` stores the hyperparameters (in `config`) and the
training set (X, y as safetensors), and `load_state_dict` refits — the models are seeded
and single-threaded, so a save/load round trip predicts identically, at the price of one
refit on load.

Cost rankers ("params", "macs"): the zero-cost proxies of White et al. 2021 ("How
Powerful are Performance Predictors in Neural Architecture Search?"): a larger model is
predicted to be better. They read a cost column of the features, so the encoder must
carry that cost: build them with ``make_predictor("params", encoder=enc)`` (the encoder's
``cost:params`` column) or ``column=<index>``. The encoder's cost columns are a monotone
transform of the costs (standardized log), so the ranking equals that of the raw costs.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from nas.errors import ConfigError
from predictors.base import NotFittedError, Predictor, check_X, check_Xy, register_predictor
from predictors.encoders import SpaceEncoder

log = logging.getLogger(__name__)


class SklearnPredictor(Predictor):
    """A seeded scikit-learn regressor on standardized targets (see the module docstring)."""

    estimator: ClassVar[type] = GradientBoostingRegressor
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, higher_is_better: bool = False, seed: int = 0, **params: Any) -> None:
        params = {**self.defaults, **params}
        super().__init__(higher_is_better, seed=int(seed), **params)
        self.seed = int(seed)
        self.params = params
        self._model: Any = None
        self._X: np.ndarray | None = None  # (N, F) float32 training features, kept for save
        self._y: np.ndarray | None = None  # (N,) float64 training labels
        self._mu = 0.0
        self._sigma = 1.0

    def _make(self) -> Any:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in self.params.items()}
        return self.estimator(random_state=self.seed, **kw)

    def fit(self, X, y, weak=None, X_val=None, y_val=None) -> SklearnPredictor:
        x, t = check_Xy(X, y)
        if weak is not None:
            log.warning("%s ignores weak labels; use 'lambdarank' to pretrain on them", self.name)
        self._mu = float(t.mean())
        self._sigma = float(t.std()) or 1.0
        model = self._make()
        with warnings.catch_warnings():
            # a small MLP on few labels often stops at max_iter; that is the intended budget
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x.astype(np.float64), (t - self._mu) / self._sigma)
        self._model, self._X, self._y = model, x, t
        return self

    def predict(self, X) -> np.ndarray:
        if self._model is None:
            raise NotFittedError(f"{self.name} predictor is not fitted; call fit(X, y) first")
        x = check_X(X, self._X.shape[1])
        return self._mu + self._sigma * self._model.predict(x.astype(np.float64))

    def state_dict(self) -> dict[str, Any]:
        if self._model is None:
            raise NotFittedError(f"{self.name} predictor is not fitted; nothing to save")
        return {
            "refit_on_load": True,
            "tensors": {"X": torch.from_numpy(self._X), "y": torch.from_numpy(self._y)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> SklearnPredictor:
        tensors = state.get("tensors") or {}
        if "X" not in tensors or "y" not in tensors:
            raise ConfigError(
                f"{self.name} state lacks its training set (X, y); scikit-learn models are "
                "stored as hyperparameters + training data and refitted on load"
            )
        return self.fit(tensors["X"].numpy(), tensors["y"].numpy())


@register_predictor("gbdt")
class GBDTPredictor(SklearnPredictor):
    estimator = GradientBoostingRegressor
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 300,
        "max_depth": 3,
        "learning_rate": 0.05,
        "subsample": 0.8,
    }


@register_predictor("rf")
class RandomForestPredictor(SklearnPredictor):
    estimator = RandomForestRegressor
    defaults: ClassVar[dict[str, Any]] = {"n_estimators": 300, "max_features": 0.5, "n_jobs": 1}


@register_predictor("mlp")
class MLPPredictor(SklearnPredictor):
    estimator = MLPRegressor
    defaults: ClassVar[dict[str, Any]] = {
        "hidden_layer_sizes": [64, 64],
        "alpha": 1e-2,
        "solver": "lbfgs",
        "max_iter": 500,
    }


class CostRanker(Predictor):
    """Ranks by one cost column of X: bigger model = predicted better (when
    `bigger_is_better`, the zero-cost proxy), else smaller = better."""

    learned = False
    feature: ClassVar[str] = ""

    def __init__(
        self,
        column: int | None = None,
        encoder: SpaceEncoder | None = None,
        bigger_is_better: bool = True,
        higher_is_better: bool = False,
    ) -> None:
        if encoder is not None:
            col = encoder.column(self.feature)
            if column is not None and column != col:
                raise ConfigError(f"column={column} contradicts the encoder's {self.feature} {col}")
            column = col
        if column is None:
            raise ConfigError(
                f"the {self.name!r} ranker reads a '{self.feature}' feature column: build it with "
                f"make_predictor({self.name!r}, encoder=SpaceEncoder(space, cost_model="
                f"CostModel(space, None), cost_features=('params', 'macs'))) or column=<index>"
            )
        super().__init__(higher_is_better, column=int(column), bigger_is_better=bigger_is_better)
        self.column = int(column)
        self.bigger_is_better = bool(bigger_is_better)

    def fit(self, X, y=None, weak=None, X_val=None, y_val=None) -> CostRanker:
        check_X(X)  # nothing to learn; validate the column exists
        self.predict(X)
        return self

    def predict(self, X) -> np.ndarray:
        x = check_X(X)
        if not 0 <= self.column < x.shape[1]:
            raise ConfigError(f"X has {x.shape[1]} features; cost column {self.column} is outside")
        cost = x[:, self.column].astype(np.float64)
        goodness = cost if self.bigger_is_better else -cost
        return goodness if self.higher_is_better else -goodness

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> CostRanker:
        return self


@register_predictor("params")
class ParamsRanker(CostRanker):
    feature = "params"


@register_predictor("macs")
class MacsRanker(CostRanker):
    feature = "macs"
