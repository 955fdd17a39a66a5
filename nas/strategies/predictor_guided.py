"""Predictor-guided search with a learning-to-rank predictor (AceNAS-style).

Zhang et al. 2021, "AceNAS: Learning to Rank Ace Neural Architectures with Weak
Supervision of Weight Sharing" (Algorithm 1):

1. draw a pool of architectures within the cost budgets; score all of them with
   cheap weak labels (the supernet's validation loss with inherited weights,
   predicted latency, params);
2. pretrain the ranker on the weak labels (multi-head regression);
3. repeat: choose a batch to evaluate strongly — the predicted best of each
   latency stratum, thinned to a diverse set by greedy farthest-point selection
   in the ranker's learned embedding; fine-tune the ranker on all strong labels
   (LambdaRank on NDCG);
4. `propose(k)`: the predicted top-k of the pool under the budgets.

Stratifying by latency (quantile bins of the table's prediction) is ours: the
search serves a latency/quality front, and the best-predicted architectures
of a pool are otherwise all large. The strategy never runs a model itself: the
weak labels come from an injected `weak_fn`, the features from an `encoder` and the
ranker from `predictor_factory` (the `nas.ranking` protocols; `predictors` implements
them). Its state is JSON (pool, weak labels, strong labels, queue); the ranker is
retrained deterministically from them on restore.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.ranking import Encoder, Predictor, require
from nas.space import SearchSpace
from nas.strategies.base import STRATEGIES, Objective, Strategy

log = logging.getLogger(__name__)


def farthest_points(emb: np.ndarray, k: int, anchors: np.ndarray | None = None) -> list[int]:
    """Greedy farthest-point selection of `k` rows of `emb` (N, D), away from `anchors`.

    Starts from the row farthest from the anchors (or row 0, the best-ranked, when
    there are none); each next row maximises its distance to everything chosen.
    """
    n = len(emb)
    k = min(k, n)
    if k == 0:
        return []
    if anchors is not None and len(anchors):
        d = np.min(((emb[:, None, :] - anchors[None]) ** 2).sum(-1), 1)
        first = int(np.argmax(d))
    else:
        d = np.full(n, np.inf)
        first = 0
    chosen = [first]
    d = np.minimum(d, ((emb - emb[first]) ** 2).sum(-1))
    while len(chosen) < k:
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, ((emb - emb[nxt]) ** 2).sum(-1))
    return chosen


@STRATEGIES.register("predictor")
class PredictorGuided(Strategy):
    """AceNAS-style ranking-predictor search (see module doc).

    weak_fn: samples → (N, H) weak labels (column 0: the weak accuracy proxy, lower is
    better). encoder: a `nas.ranking.Encoder` (fitted on the pool when it is not yet).
    predictor_factory: a new `nas.ranking.Predictor` for each retraining.
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: int = 0,
        *,
        weak_fn: Callable[[Sequence[Mapping[str, Any]]], np.ndarray],
        encoder: Encoder,
        predictor_factory: Callable[[], Predictor],
        cost_fn: Callable[..., Mapping[str, np.ndarray]] | None = None,
        budgets: Mapping[str, float] | None = None,
        pool_size: int = 128,
        batch_size: int = 4,
        n_bins: int = 4,
    ) -> None:
        super().__init__(space, objectives, seed)
        require(
            encoder,
            Encoder,
            "the predictor strategy's encoder",
            "pass predictors.SpaceEncoder(space) or an object with fitted, fit and transform",
        )
        self.weak_fn, self.encoder, self.predictor_factory = weak_fn, encoder, predictor_factory
        self.cost_fn, self.budgets = cost_fn, dict(budgets or {})
        self.pool_size, self.batch_size, self.n_bins = pool_size, batch_size, n_bins
        self.primary = self.objectives[0]
        self.pool: list[dict[str, Any]] = []
        self.weak: np.ndarray | None = None
        self.strong: dict[int, float] = {}  # pool index → primary objective (strong label)
        self.failed: set[int] = set()
        self.queue: list[int] = []
        self.asked: set[int] = set()
        self._predictor: Predictor | None = None
        self._fitted_on = -1
        self._X: np.ndarray | None = None

    # -- pool -----------------------------------------------------------------------------
    def _ensure_pool(self) -> None:
        if self.pool:
            return
        rng = np.random.default_rng(self.seed)
        cand = self.space.sample_many(self.pool_size * 8, rng=rng)
        if self.budgets and self.cost_fn is not None:
            costs = self.cost_fn(cand, tuple(self.budgets))
            ok = np.all([costs[k] <= v for k, v in self.budgets.items()], axis=0)
            cand = [s for s, keep in zip(cand, ok) if keep]
            if not cand:
                raise ConfigError(
                    f"no architecture of {len(ok)} random ones meets the budgets {self.budgets}; "
                    "raise the budgets"
                )
        # distinct architectures only
        seen, pool = set(), []
        for s in cand:
            h = self.space.freeze(s).hash
            if h not in seen:
                seen.add(h)
                pool.append(dict(self.space.canonical(s)))
        self.pool = pool[: self.pool_size]
        log.info(
            "predictor-guided: scoring a pool of %d architectures with weak labels", len(self.pool)
        )
        self.weak = np.asarray(self.weak_fn(self.pool), dtype=np.float64).reshape(
            len(self.pool), -1
        )

    # -- ranker ---------------------------------------------------------------------------
    def _x(self) -> np.ndarray:
        """The encoded pool (N, F); the encoder's statistics are fitted on the pool."""
        if self._X is None:
            if not self.encoder.fitted:
                self.encoder.fit(self.pool)
            self._X = self.encoder.transform(self.pool)
        return self._X

    def predictor(self) -> Predictor:
        """The ranker fitted on the weak labels and every strong label told so far."""
        n = len(self.strong)
        if self._predictor is not None and self._fitted_on == n:
            return self._predictor
        x = self._x()
        p = require(
            self.predictor_factory(),
            Predictor,
            "what predictor_factory returned",
            "return e.g. predictors.make_predictor('lambdarank', seed=...)",
        )
        p.pretrain(x, self.weak)
        if n >= 2:
            idx = np.array(sorted(self.strong))
            p.fit(x[idx], np.array([self.strong[i] for i in idx]))
        self._predictor, self._fitted_on = p, n
        return p

    def _scores(self) -> np.ndarray:
        """Predicted primary objective of the pool, lower is better."""
        if len(self.strong) < 2:
            s = self.weak[:, 0].copy()  # before strong labels: the supernet's own ranking
        else:
            s = np.asarray(self.predictor().predict(self._x()), dtype=np.float64)
        return s if self.primary.direction == "min" else -s

    def _next_batch(self) -> list[int]:
        free = np.array(
            [i for i in range(len(self.pool)) if i not in self.asked and i not in self.failed]
        )
        if len(free) == 0:
            return []
        scores = self._scores()
        # strata: quantile bins of predicted latency (weak column 1 when present)
        lat = self.weak[:, 1] if self.weak.shape[1] > 1 else np.zeros(len(self.pool))
        edges = np.quantile(lat[free], np.linspace(0, 1, self.n_bins + 1)[1:-1])
        bins = np.searchsorted(edges, lat[free])
        per_bin = int(np.ceil(2 * self.batch_size / self.n_bins))
        cand: list[int] = []
        for b in range(self.n_bins):
            members = free[bins == b]
            cand += [int(i) for i in members[np.argsort(scores[members])][:per_bin]]
        cand_arr = np.array(cand)
        emb = self._embed(cand_arr)
        done = np.array(sorted(self.asked), dtype=int)
        anchors = self._embed(done) if len(done) else None
        pick = farthest_points(emb, self.batch_size, anchors)
        return [int(cand_arr[i]) for i in pick]

    def _embed(self, idx: np.ndarray) -> np.ndarray:
        x = self._x()[idx]
        if len(self.strong) >= 2:
            return np.asarray(self.predictor().embed(x), dtype=np.float64)
        return x.astype(np.float64)

    # -- ask / tell ---------------------------------------------------------------------------
    def ask(self) -> dict[str, Any]:
        self._ensure_pool()
        if not self.queue:
            self.queue = self._next_batch()
        if not self.queue:
            log.warning("predictor-guided: the pool is exhausted; asking a random architecture")
            self.n_asked += 1
            return dict(self.space.canonical(self.space.sample(rng=self.rng)))
        i = self.queue.pop(0)
        self.asked.add(i)
        self.n_asked += 1
        return dict(self.pool[i])

    def _index(self, sample: Mapping[str, Any]) -> int | None:
        h = self.space.freeze(sample).hash
        for i, s in enumerate(self.pool):
            if self.space.freeze(s).hash == h:
                return i
        return None

    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        self.n_told += 1
        i = self._index(sample)
        if i is None:
            return
        if (
            metrics is None
            or self.primary.name not in metrics
            or np.isnan(metrics[self.primary.name])
        ):
            self.failed.add(i)
            return
        self.strong[i] = float(metrics[self.primary.name])
        self.failed.discard(i)  # a retried trial that failed before

    def propose(self, k: int = 1) -> list[dict[str, Any]]:
        """The predicted top-k of the pool (all within the budgets by construction)."""
        self._ensure_pool()
        order = np.argsort(self._scores())
        return [dict(self.pool[i]) for i in order[:k]]

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "pool": self.pool,
            "weak": None if self.weak is None else self.weak.tolist(),
            "strong": {str(k): v for k, v in self.strong.items()},
            "failed": sorted(self.failed),
            "queue": list(self.queue),
            "asked": sorted(self.asked),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool = [dict(s) for s in state["pool"]]
        self.weak = None if state["weak"] is None else np.asarray(state["weak"], dtype=np.float64)
        self.strong = {int(k): float(v) for k, v in state["strong"].items()}
        self.failed = set(state["failed"])
        self.queue = list(state["queue"])
        self.asked = set(state["asked"])
        self._predictor, self._fitted_on, self._X = None, -1, None
