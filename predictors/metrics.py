"""Ranking metrics of predictors: Kendall τ, Spearman ρ, NDCG@k, precision@k, best-of-top-k.

Label convention of the whole `predictors` package: y is LOWER-IS-BETTER (a loss, a
latency) unless ``higher_is_better=True`` is passed. Predictions are ordered like y.

NDCG (Järvelin & Kekäläinen 2002, "Cumulated gain-based evaluation of IR techniques"),
with the exponential gain of Burges et al. 2005:

    DCG@k = Σ_{p=1..k} (2^{grade(π_p)} − 1) / log2(p + 1),   NDCG@k = DCG@k / IDCG@k

where π is the predicted order (best first) and IDCG@k the DCG@k of the true order.
Grades are rank-based and continuous, so they need no arbitrary label thresholds and
are invariant to any monotone transform of y:

    grade_i = G · (r_i − 1) / (N − 1)

with r_i the 1-based rank of item i among the N items from worst (1) to best (N), ties
sharing their average rank, and G = ``max_grade`` (default 5: the best item has relevance
2^5 − 1 = 31, the median ≈ 4.7, the worst 0). A single item has grade G. Ties in the
predictions are broken by item order (a stable sort).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from nas.errors import ConfigError

MAX_GRADE = 5.0


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ConfigError(f"y_true has {t.size} items and y_pred {p.size}; pass one per item")
    if t.size == 0:
        raise ConfigError("ranking metrics need at least one item")
    return t, p


def _k(k: int, n: int) -> int:
    if k < 1:
        raise ConfigError(f"k must be ≥ 1, got {k}")
    return min(int(k), n)


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall τ-b between labels and predictions (NaN if either is constant)."""
    t, p = _pair(y_true, y_pred)
    return float(stats.kendalltau(t, p).statistic)


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman ρ between labels and predictions (NaN if either is constant)."""
    t, p = _pair(y_true, y_pred)
    return float(stats.spearmanr(t, p).statistic)


def best_first(y: np.ndarray, higher_is_better: bool = False) -> np.ndarray:
    """Indices of the items from best to worst (stable: ties keep item order)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return np.argsort(-y if higher_is_better else y, kind="stable")


def grades(y: np.ndarray, higher_is_better: bool = False, max_grade: float = MAX_GRADE):
    """Rank-based grades in [0, max_grade] (best = max_grade); see the module docstring."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = y.size
    if n == 1:
        return np.full(1, float(max_grade))
    goodness = y if higher_is_better else -y
    r = stats.rankdata(goodness, method="average")  # 1 = worst, N = best
    return max_grade * (r - 1.0) / (n - 1.0)


def relevance(y: np.ndarray, higher_is_better: bool = False, max_grade: float = MAX_GRADE):
    """Gain 2^grade − 1 of every item (the NDCG relevance)."""
    return np.exp2(grades(y, higher_is_better, max_grade)) - 1.0


def _dcg(gain_in_order: np.ndarray, k: int) -> float:
    disc = 1.0 / np.log2(np.arange(2, k + 2))  # (k,) positions 1..k
    return float((gain_in_order[:k] * disc).sum())


def ndcg_at_k(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    k: int,
    higher_is_better: bool = False,
    max_grade: float = MAX_GRADE,
) -> float:
    """NDCG@k of the order of `y_pred` against the labels `y_true` (1 = perfect top k)."""
    t, p = _pair(y_true, y_pred)
    k = _k(k, t.size)
    gain = relevance(t, higher_is_better, max_grade)
    ideal = _dcg(np.sort(gain)[::-1], k)
    if ideal <= 0.0:  # every gain is 0: any order is ideal
        return 1.0
    return _dcg(gain[best_first(p, higher_is_better)], k) / ideal


def precision_at_k(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, higher_is_better: bool = False
) -> float:
    """|predicted top-k ∩ true top-k| / k (ties at the k-th label: item order decides)."""
    t, p = _pair(y_true, y_pred)
    k = _k(k, t.size)
    top_pred = best_first(p, higher_is_better)[:k]
    top_true = best_first(t, higher_is_better)[:k]
    return float(np.intersect1d(top_pred, top_true).size) / k


def best_true_of_top_k(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, higher_is_better: bool = False
) -> float:
    """The best true label among the predicted top-k (what a search that evaluates the
    predictor's k favourites would find)."""
    t, p = _pair(y_true, y_pred)
    k = _k(k, t.size)
    chosen = t[best_first(p, higher_is_better)[:k]]
    return float(chosen.max() if higher_is_better else chosen.min())
