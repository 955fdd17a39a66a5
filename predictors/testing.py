"""The predictor-guided strategy with small real components, for tests of code that runs it.

`nas` never imports `predictors`: the application injects a ranker, an encoder and a weak
label into `PredictorGuided`. A test of a strategy runner (the strategy contract, a Ray
Tune run) needs the same, small and fast; this builds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.space import SearchSpace
from nas.strategies.predictor_guided import PredictorGuided
from predictors import make_predictor
from predictors.encoders import SpaceEncoder


def small_predictor_guided(space: SearchSpace, objectives: Any, seed: int = 0) -> PredictorGuided:
    """LambdaRank (40 steps) on a one-hot encoding, pretrained on a weak label that is a fixed
    random linear function of the encoding; a pool of 32, batches of 4, 64 candidates per
    round screened by an ensemble of 2."""
    enc = SpaceEncoder(space, "onehot")
    w = np.random.default_rng(seed).normal(size=enc.n_features)
    return PredictorGuided(
        space,
        objectives,
        seed,
        weak_fn=lambda samples: (enc.transform(samples) @ w)[:, None],
        encoder=enc,
        predictor_factory=lambda: make_predictor("lambdarank", seed=seed, max_steps=40),
        pool_size=32,
        batch_size=4,
        candidates=64,
        ensemble=2,
    )
