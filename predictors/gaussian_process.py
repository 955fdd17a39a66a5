"""Gaussian-process ranker: a GP regression of the normal scores of the labels' ranks.

Rasmussen & Williams 2006, "Gaussian Processes for Machine Learning", eq. 2.25–2.26 (the
posterior mean k*ᵀ(K + σ²I)⁻¹y), with the kernel's hyperparameters fitted by maximising
the log marginal likelihood (eq. 5.8) — scikit-learn's `GaussianProcessRegressor`. The
kernel is c·RBF(ℓ) + white noise on the encoder's features; ℓ starts at the median
distance between the training rows.

The GP sees the labels' ranks, not their values: y is mapped to the normal scores
Φ⁻¹((rank − ½)/N) (a Gaussian copula, as in HEBO, Cowen-Rivers et al. 2022, §4.1).
Ranking is all a search needs, and ranks make the fit immune to heavy-tailed noise and
to catastrophic outliers (an architecture that does not train at all would otherwise
dominate the squared error). Its predictions are on that normal-score scale, ordered
like y (lower = better unless ``higher_is_better``).

Why it is here: beside LambdaRank in the predictor-guided search's ensemble
(`predictors.kit`). On the synthetic problems of `bench/ranking_problems.py` with 100
random labels (seeds 0–2, Kendall τ on 1000 held-out architectures), LambdaRank alone
(pretrained on the problem's weak label) reaches 0.67 / 0.47 / 0.76 (cell201 /
wide_interactions / mixed_cardinality), this GP 0.78 / 0.54 / 0.83; the ensemble's
figure is ``kendall_tau_random_labels`` of `bench/ranking_benchmark.py`. The members
disagree where data is thin, which is the uncertainty the acquisition uses.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import norm, rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

from predictors.base import NotFittedError, check_X, check_Xy, register_predictor
from predictors.baselines import SklearnPredictor


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Φ⁻¹((rank − ½)/N) of each label (ties share their mean rank)."""
    return norm.ppf((rankdata(y) - 0.5) / len(y))


@register_predictor("gp")
class GaussianProcessRanker(SklearnPredictor):
    """GP on rank normal scores (see the module docstring); `restarts` of the optimizer."""

    estimator: ClassVar[type] = GaussianProcessRegressor
    defaults: ClassVar[dict[str, Any]] = {"restarts": 1}

    def fit(self, X, y, weak=None, X_val=None, y_val=None) -> GaussianProcessRanker:
        x, t = check_Xy(X, y)
        xd = x.astype(np.float64)
        d = pdist(xd) if len(xd) > 1 else np.ones(1)
        ell = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(ell, (1e-2 * ell, 1e2 * ell)) + (
            WhiteKernel(0.1, (1e-5, 1e1))
        )
        model = GaussianProcessRegressor(
            kernel,
            n_restarts_optimizer=int(self.params["restarts"]),
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            # a hyperparameter at its bound is a finding of the fit, not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(xd, normal_scores(t))
        self._model, self._X, self._y = model, x, t
        self._mu, self._sigma = 0.0, 1.0  # predictions stay on the normal-score scale
        return self

    def predict_std(self, X) -> np.ndarray:
        """Posterior standard deviation (N,) on the normal-score scale."""
        if self._model is None:
            raise NotFittedError("gp predictor is not fitted; call fit(X, y) first")
        x = check_X(X, self._X.shape[1])
        return self._model.predict(x.astype(np.float64), return_std=True)[1]

    def condition(self, X, y) -> GaussianProcessRanker:
        """The posterior on a new training set with this fit's kernel hyperparameters (no
        optimisation): an ensemble member on a subset of the labels."""
        if self._model is None:
            raise NotFittedError("gp predictor is not fitted; call fit(X, y) first")
        x, t = check_Xy(X, y)
        model = GaussianProcessRegressor(self._model.kernel_, optimizer=None)
        model.fit(x.astype(np.float64), normal_scores(t))
        self._model, self._X, self._y = model, x, t
        return self
