"""Accuracy / ranking predictors over encoded architectures.

    enc = SpaceEncoder(space, cost_model=CostModel(space, None), cost_features=("params", "macs"))
    X = enc.fit_transform(samples)                        # (N, F) float32
    pred = make_predictor("lambdarank", seed=0).fit(X, losses, weak=(X_pool, W_pool))
    best_first = pred.rank(enc.transform(candidates))

Labels are lower-is-better (losses, latency) unless ``higher_is_better=True``.
`PREDICTORS` lists the registered predictors: lambdarank, gp, additive_gp, gbdt, rf, mlp,
params, macs.
`predictors.kit` registers the default kit of the predictor-guided search
(`nas.ranking.default_kit`).
"""

from predictors import (  # noqa: F401  (register the predictors, the kit)
    additive_gp,
    baselines,
    gaussian_process,
    kit,
    lambdarank,
)
from predictors.base import PREDICTORS, NotFittedError, Predictor, make_predictor
from predictors.baselines import CostRanker, SklearnPredictor
from predictors.encoders import SpaceEncoder
from predictors.lambdarank import LambdaRankPredictor, lambdarank_loss, lambdas
from predictors.metrics import (
    best_true_of_top_k,
    kendall_tau,
    ndcg_at_k,
    precision_at_k,
    spearman,
)

__all__ = [
    "PREDICTORS",
    "CostRanker",
    "LambdaRankPredictor",
    "NotFittedError",
    "Predictor",
    "SklearnPredictor",
    "SpaceEncoder",
    "best_true_of_top_k",
    "kendall_tau",
    "lambdarank_loss",
    "lambdas",
    "make_predictor",
    "ndcg_at_k",
    "precision_at_k",
    "spearman",
]
