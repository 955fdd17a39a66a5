"""Fixtures of the predictor tests: the synthetic ranking problem, encoded once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import ranking_problem as rp

from predictors import SpaceEncoder


@pytest.fixture(scope="session")
def problem() -> SimpleNamespace:
    """Space, encoder, a weak-label pool (2000), a held-out test set (400) and `train(n,
    seed)` giving n strong labels. Kendall τ of the pool's supernet score vs the truth ≈ 0.67."""
    sp = rp.space()
    enc = SpaceEncoder(sp, kind="onehot")

    def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        s = sp.sample_many(n, rng=seed)
        return enc.transform(s), rp.true_loss(sp, s, seed=seed)

    pool = sp.sample_many(2000, rng=100)
    return SimpleNamespace(
        space=sp,
        encoder=enc,
        X_pool=enc.transform(pool),
        W_pool=rp.weak_labels(sp, pool),
        y_pool=rp.true_loss(sp, pool, noise=0.0),
        test=data(400, 200),
        train=data,
    )
