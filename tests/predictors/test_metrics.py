"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.errors import ConfigError
from predictors.metrics import (
    best_true_of_top_k,
    grades,
    kendall_tau,
    ndcg_at_k,
    precision_at_k,
    relevance,
    spearman,
)

Y = np.array([0.3, 0.1, 0.5, 0.2, 0.4])  # lower is better: order 1, 3, 0, 4, 2


def test_ndcg_of_the_perfect_ranking_is_one_and_of_the_reversed_less():
    assert ndcg_at_k(Y, Y, 3) == pytest.approx(1.0)
    assert ndcg_at_k(Y, 2 * Y + 7, 5) == pytest.approx(1.0)  # any monotone map of the truth
    assert ndcg_at_k(Y, -Y, 5) < 0.5
    # higher_is_better flips which end is the top
    assert ndcg_at_k(Y, Y, 3, higher_is_better=True) == pytest.approx(1.0)
    assert ndcg_at_k(Y, -Y, 3, higher_is_better=True) < 0.5


def test_ndcg_by_hand():
    # labels 0, 1, 2 (lower better): grades 5, 2.5, 0 → gains 31, 2^2.5 − 1, 0
    y = np.array([0.0, 1.0, 2.0])
    g1 = 2**2.5 - 1
    np.testing.assert_allclose(grades(y), [5.0, 2.5, 0.0])
    np.testing.assert_allclose(relevance(y), [31.0, g1, 0.0])
    idcg = 31 + g1 / math.log2(3)
    # predicted order reversed: item 2, item 1, item 0
    dcg = 0 + g1 / math.log2(3) + 31 / math.log2(4)
    assert ndcg_at_k(y, -y, 3) == pytest.approx(dcg / idcg)
    # @1 with the right item on top is perfect even if the rest is wrong
    assert ndcg_at_k(y, [0.0, 5.0, 1.0], 1) == pytest.approx(1.0)
    assert ndcg_at_k(y, [0.0, 5.0, 1.0], 2) == pytest.approx((31 + 0) / idcg)


def test_grades_share_ties_and_single_items():
    np.testing.assert_allclose(grades([1.0, 1.0, 0.0]), [1.25, 1.25, 5.0])
    np.testing.assert_allclose(grades([4.0]), [5.0])
    assert ndcg_at_k([1.0, 1.0], [0.0, 1.0], 1) == pytest.approx(1.0)  # ties: any order is ideal


def test_precision_and_best_of_top_k():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    pred = np.array([1.0, 5.0, 2.0, 4.0, 3.0])  # predicted top-2 = {0, 2}; true top-2 = {0, 1}
    assert precision_at_k(y, pred, 2) == pytest.approx(0.5)
    assert precision_at_k(y, y, 3) == pytest.approx(1.0)
    assert precision_at_k(y, -y, 2) == pytest.approx(0.0)
    assert best_true_of_top_k(y, pred, 2) == 1.0
    assert best_true_of_top_k(y, [9.0, 0.0, 1.0, 5.0, 6.0], 2) == 2.0  # picks items 1, 2
    assert best_true_of_top_k(y, pred, 2, higher_is_better=True) == 4.0  # items 1, 3: y 2, 4
    assert precision_at_k(y, y, 99) == pytest.approx(1.0)  # k is capped at N


def test_correlations():
    assert kendall_tau(Y, Y) == pytest.approx(1.0)
    assert kendall_tau(Y, -Y) == pytest.approx(-1.0)
    assert spearman(Y, Y**3) == pytest.approx(1.0)
    # one discordant pair out of 10: τ = (9 − 1) / 10
    assert kendall_tau([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.8)
    # Σd² = 2: ρ = 1 − 6·2 / (5·24)
    assert spearman([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.9)


def test_metric_errors_teach():
    with pytest.raises(ConfigError, match="one per item"):
        ndcg_at_k([1, 2], [1, 2, 3], 1)
    with pytest.raises(ConfigError, match="k must be"):
        precision_at_k([1, 2], [1, 2], 0)
