"""Predictor-guided search: a learning-to-rank surrogate that screens a moving pool.

Zhang et al. 2021, "AceNAS: Learning to Rank Ace Neural Architectures with Weak
Supervision of Weight Sharing" (Algorithm 1), with the surrogate loop of BANANAS
(White et al. 2021, "BANANAS: Bayesian Optimization with Neural Architectures for
Neural Architecture Search", Algorithm 1) and BRP-NAS (Dudziak et al. 2020):

1. draw a *weak pool* of `pool_size` architectures within the cost budgets and score
   them with cheap weak labels (the supernet's loss with inherited weights, table
   latency, params — or, by default, whatever zero-cost labels the cost model gives);
   pretrain the rankers that learn from weak labels on them (LambdaRank: multi-head
   regression). Weak labels that are free to compute (`nas.ranking.ZeroCost`, as the
   default kit's are) are also features of every candidate (as in the OMNI predictor of
   White et al. 2021, "How Powerful are Performance Predictors in Neural Architecture
   Search?"), whose weights — and signs — the rankers learn from the strong labels;
   `nas.ranking.weak_agreement` reports a weak label that ranks the told architectures
   the wrong way round;
2. first round: the weak labels' best of each latency stratum (no weak labels: a
   diverse random set), thinned by greedy farthest-point selection;
3. every next round: fit an *ensemble* of `ensemble` rankers on the strong labels told
   so far (the factories' rankers in turn — by default the additive GP of
   `predictors.additive_gp` and a GP with one length scale, both on rank normal scores;
   the first of each kind on every label, the others on a random 80 % of them, GPs with
   their first's hyperparameters), then build `candidates` fresh candidates around what
   is known to be good — mutations and uniform crossovers of the best told
   architectures, plus uniform random draws, plus what is left of the weak pool — keep
   those within the budgets and never asked, and score them by the acquisition (the
   GP-UCB rule of Srinivas et al. 2010, Algorithm 1, in rank space, lower is better)

       a(x) = μ(x) − κ σ(x),   μ = mean_k z_k(x),   σ² = var_k z_k(x) + mean_k s_k(x)²

   with z_k member k's predictions z-scored over the candidates, s_k its posterior
   standard deviation in the same units (GP members; 0 for the others) — σ² is the
   variance of the ensemble as a mixture (law of total variance) — and κ = `explore`.
   The batch: the best `SHORTLIST` of the candidates by a(x) of each latency stratum
   (at least 2 × `batch_size`), thinned by farthest points in the ranker's embedding
   away from what was asked before. So the pool moves with the strong labels.
   Mutations change 1–3 labels (probabilities ½, 0.3, 0.2), times 2^⌊s / `STALL`⌋
   where s is the number of labels told since the best observed value last improved,
   at most max(3, labels / 8): a search that stops improving takes larger steps
   (the success/failure-adapted trust region of TuRBO, Eriksson et al. 2019, and, in
   Hamming distance, Casmopolitan, Wan et al. 2021, "Think Global and Act Local"), and
   in a space of hundreds of labels, most of which barely matter, it stops circling
   one architecture's near-copies.
4. `propose(k)`: the predicted top-k of the told architectures and a fresh candidate
   set, all within the budgets; `recommend(k)`: the predicted top-k of the told ones
   alone (what to take from a noisy search).

Stratifying by latency (quantile bins of the second objective when the cost function
gives it) is ours: the search serves a latency/quality front, and the best-predicted
architectures of a pool are otherwise all large. The strategy never runs a model: the
weak labels come from `weak_fn`, the features from an `encoder`, the rankers from
`predictor_factory` (the `nas.ranking` protocols). Left out, they are the defaults of
`nas.ranking.default_kit` (`predictors`: a one-hot + ordinal encoder, the additive GP and
a GP, and zero-cost weak labels from `cost_fn`). Its state is JSON (weak pool, weak
labels, strong labels, queue, generator); the rankers are retrained deterministically on
restore.

A share of every round's asks drawn uniformly at random, set by the ranker's measured
skill (Mann–Whitney AUC of its asks against random ones), was tried and removed: on
`bench/ranking_benchmark.py` (seeds 0–4; digits_unet 0–3) it lost to the same search
without it at N = 50 / 100 on cell201 (93.04 / 93.27 against 93.30 / 93.67) and
wide_interactions (0.15 / −0.61 against 0.16 / −0.70), and on digits_unet it reached
0.0549 / 0.0550, still behind random search's 0.0522 / 0.0519.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.ranking import (
    Encoder,
    Predictor,
    default_kit,
    is_zero_cost,
    require,
    weak_agreement,
)
from nas.space import SearchSpace
from nas.spec import Sample
from nas.strategies.base import STRATEGIES, ObjectivesLike, Strategy, sample_key

log = logging.getLogger(__name__)

SUBSET = 0.8  # share of the strong labels each ensemble member is fitted on
MIN_LABELS = 2  # strong labels before the first ranker is fitted
SHORTLIST = 0.05  # share of a stratum's candidates the farthest-point thinning picks from
STALL = 16  # labels without a new best observation that double the mutation radius
MAX_DOUBLINGS = 6


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


def _zscore(p: np.ndarray) -> np.ndarray:
    """Each row of (K, N) predictions standardized over its N candidates."""
    sd = p.std(axis=1, keepdims=True)
    return (p - p.mean(axis=1, keepdims=True)) / np.where(sd > 1e-12, sd, 1.0)


@STRATEGIES.register("predictor")
class PredictorGuided(Strategy):
    """Learning-to-rank surrogate search over a moving pool (see the module doc).

    weak_fn: samples → (N, H) weak labels (column 0: the weak proxy of the primary
    objective, lower is better); None: the default kit's zero-cost labels from
    `cost_fn` (none without one: the ranker then learns from strong labels alone).
    encoder: a `nas.ranking.Encoder`; predictor_factory: a new `nas.ranking.Predictor`
    per fit, or several factories whose rankers the ensemble takes in turn (both
    default to the kit's: LambdaRank and a GP). cost_fn: samples, names → {name: (N,)}, like
    `CostModel.costs`; budgets: cost name → upper bound (needs cost_fn).
    pool_size: the weak pool; batch_size: asks per round; n_bins: latency strata;
    candidates: fresh candidates screened per round; ensemble: rankers per round;
    explore: κ of the acquisition; mutation_share / random_share: of the candidates
    (the rest are crossovers).
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectivesLike,
        seed: int = 0,
        *,
        weak_fn: Callable[[Sequence[Mapping[str, Any]]], np.ndarray] | None = None,
        encoder: Encoder | None = None,
        predictor_factory: Callable[[], Predictor]
        | Sequence[Callable[[], Predictor]]
        | None = None,
        cost_fn: Callable[..., Mapping[str, np.ndarray]] | None = None,
        budgets: Mapping[str, float] | None = None,
        pool_size: int = 256,
        batch_size: int = 4,
        n_bins: int = 4,
        candidates: int = 512,
        ensemble: int = 4,
        explore: float = 0.5,
        mutation_share: float = 0.5,
        random_share: float = 0.25,
        weak_features: bool | None = None,
    ) -> None:
        super().__init__(space, objectives, seed)
        for name, v, lo in (
            ("pool_size", pool_size, 1),
            ("batch_size", batch_size, 1),
            ("n_bins", n_bins, 1),
            ("candidates", candidates, 1),
            ("ensemble", ensemble, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"predictor strategy: {name} must be an int ≥ {lo}, got {v!r}")
        if not (0 <= mutation_share and 0 <= random_share and mutation_share + random_share <= 1):
            raise ConfigError(
                "predictor strategy: mutation_share and random_share must be ≥ 0 and sum to "
                f"≤ 1 (the rest are crossovers), got {mutation_share}, {random_share}"
            )
        if explore < 0:
            raise ConfigError(f"predictor strategy: explore must be ≥ 0, got {explore}")
        if budgets and cost_fn is None:
            raise ConfigError(
                f"predictor strategy: budgets {dict(budgets)} need a cost_fn (e.g. "
                "CostModel(space, table).costs) to keep candidates within them"
            )
        if weak_fn is None or encoder is None or predictor_factory is None:
            kit = default_kit(space, cost_fn, self.seed)
            weak_fn = kit.weak_fn if weak_fn is None else weak_fn
            encoder = kit.encoder if encoder is None else encoder
            predictor_factory = (
                kit.predictor_factory if predictor_factory is None else (predictor_factory)
            )
        require(
            encoder,
            Encoder,
            "the predictor strategy's encoder",
            "pass predictors.SpaceEncoder(space) or an object with fitted, fit and transform",
        )
        self.weak_fn, self.encoder = weak_fn, encoder
        # the weak labels as ranker inputs too: when they are free to compute for every
        # candidate (nas.ranking.ZeroCost), unless the caller says otherwise
        self.weak_features = bool(
            weak_fn is not None
            and (is_zero_cost(weak_fn) if weak_features is None else weak_features)
        )
        self._weak_stats: tuple[np.ndarray, np.ndarray] | None = None
        # the weak/strong check over the told archs (`_check_weak`): Spearman ρ per weak
        # column, and the columns that point the wrong way
        self.weak_rho: np.ndarray | None = None
        self.weak_flipped: list[int] = []
        self.factories = (
            (predictor_factory,) if callable(predictor_factory) else tuple(predictor_factory)
        )
        if not self.factories:
            raise ConfigError("predictor strategy: predictor_factory is an empty sequence")
        self.cost_fn, self.budgets = cost_fn, dict(budgets or {})
        self.pool_size, self.batch_size, self.n_bins = pool_size, batch_size, n_bins
        self.n_candidates, self.ensemble, self.explore = candidates, ensemble, float(explore)
        self.mutation_share, self.random_share = float(mutation_share), float(random_share)
        self.primary = self.objectives[0]
        # the cost the rounds are stratified by: the second objective, when it is a cost
        self.stratum = self.objectives[1].name if len(self.objectives) > 1 else None
        self.pool: list[Sample] = []  # the weak pool
        self.weak: np.ndarray | None = None  # (pool, H) or None: no weak labels
        self.labelled: dict[str, tuple[Sample, float]] = {}  # key → (sample, primary value)
        self.failed: set[str] = set()
        self.asked: set[str] = set()
        self.queue: list[Sample] = []
        self._members: list[Predictor] | None = None
        self._fitted_on = -1
        self._bases: list[Predictor] | None = None  # per factory, pretrained on the weak pool

    # -- weak pool ---------------------------------------------------------------------------
    def _within(self, samples: list[Sample]) -> list[Sample]:
        """The samples within every budget (a NaN cost is over)."""
        if not self.budgets or not samples:
            return samples
        costs = self.cost_fn(samples, tuple(self.budgets))
        ok = np.all(
            [np.asarray(costs[k], dtype=np.float64) <= v for k, v in self.budgets.items()], axis=0
        )
        return [s for s, keep in zip(samples, ok, strict=True) if keep]

    def _distinct(self, samples: Sequence[Mapping[str, Any]], skip: set[str]) -> list[Sample]:
        """Canonical, distinct samples whose keys are not in `skip`."""
        out, seen = [], set(skip)
        for s in samples:
            c = self.space.canonical(s)
            k = sample_key(c)
            if k not in seen:
                seen.add(k)
                out.append(c)
        return out

    def _ensure_pool(self) -> None:
        if self.pool:
            return
        rng = np.random.default_rng([self.seed, 0x9001])  # own stream: asks stay seeded
        drawn = self.space.sample_many(self.pool_size * 8, rng=rng)
        cand = self._within(drawn)
        if not cand:
            raise ConfigError(
                f"no architecture of {len(drawn)} random ones meets the budgets {self.budgets}; "
                "raise the budgets"
            )
        self.pool = self._distinct(cand, set())[: self.pool_size]
        if self.weak_fn is None:
            self.weak = None
            return
        log.info("predictor-guided: weak labels of a pool of %d architectures", len(self.pool))
        w = np.asarray(self.weak_fn(self.pool), dtype=np.float64)
        self.weak = w.reshape(len(self.pool), -1)

    # -- rankers -----------------------------------------------------------------------------
    def _x(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Ranker features (N, F): the encoder's, then the weak labels standardized over
        the weak pool when `weak_features` (White et al. 2021's zero-cost proxies as
        features of a predictor)."""
        self._ensure_pool()  # a strategy told labels before it asked: its weak pool first
        if not self.encoder.fitted:  # cost statistics: fitted once, on the weak pool
            self.encoder.fit(self.pool)
        x = np.asarray(self.encoder.transform(list(samples)), dtype=np.float32)
        if not self.weak_features or not len(x):
            return x
        if self._weak_stats is None:
            mu, sd = np.nanmean(self.weak, 0), np.nanstd(self.weak, 0)
            self._weak_stats = (mu, np.where(sd > 1e-12, sd, 1.0))
        w = np.asarray(self.weak_fn(list(samples)), dtype=np.float64).reshape(len(x), -1)
        w = np.nan_to_num((w - self._weak_stats[0]) / self._weak_stats[1])  # NaN: the mean
        return np.concatenate([x, w.astype(np.float32)], 1)

    def _new_predictor(self, factory: Callable[[], Predictor]) -> Predictor:
        return require(
            factory(),
            Predictor,
            "what predictor_factory returned",
            "return e.g. predictors.make_predictor('lambdarank', seed=...)",
        )

    def members(self) -> list[Predictor]:
        """The ensemble fitted on the weak pool and the strong labels told so far."""
        n = len(self.labelled)
        if self._members is not None and self._fitted_on == n:
            return self._members
        if self._bases is None:
            self._ensure_pool()  # a strategy told labels before it asked: its weak pool first
            self._bases = [self._new_predictor(f) for f in self.factories]
            if self.weak is not None:
                xp = self._x(self.pool)
                for b in self._bases:
                    b.pretrain(xp, self.weak)
        items = list(self.labelled.values())
        x = self._x([s for s, _ in items])
        y = np.array([self.primary.sign * v for _, v in items])  # lower is better
        if self.weak_features:
            self._check_weak(x[:, -self.weak.shape[1] :], y)
        rng = np.random.default_rng([self.seed, n, 0x5EED])  # a function of the labels told
        members: list[Predictor] = []
        for k in range(self.ensemble):
            idx = np.arange(n)
            # the first member of each kind sees every label; the others a random subset
            if k >= len(self._bases) and n >= 5:
                idx = np.sort(rng.choice(n, size=max(4, math.ceil(SUBSET * n)), replace=False))
            first = members[k % len(self._bases)] if k >= len(self._bases) else None
            if first is not None and callable(getattr(first, "condition", None)):
                # a GP: the subset's posterior under the first member's hyperparameters
                m = copy.deepcopy(first).condition(x[idx], y[idx])
            else:
                m = copy.deepcopy(self._bases[k % len(self._bases)])  # from pretraining
                m.fit(x[idx], y[idx])
            members.append(m)
        self._members, self._fitted_on = members, n
        return members

    def _check_weak(self, weak: np.ndarray, y: np.ndarray) -> None:
        """The weak/strong agreement check (`nas.ranking.weak_agreement`) over the told
        architectures: a weak label that ranks them the wrong way round is reported. The
        rankers take weak labels as features with learned weights, so they use such a
        label reversed by themselves; the proxy alone is trusted only before any label."""
        rho, sign = weak_agreement(weak, y)
        flipped = [int(h) for h in np.flatnonzero(sign < 0)]
        if flipped != self.weak_flipped:
            log.info(
                "predictor-guided: weak label columns %s rank the %d told architectures the "
                "wrong way round (Spearman %s); the rankers use them reversed",
                flipped,
                len(y),
                np.round(rho, 2).tolist(),
            )
        self.weak_rho, self.weak_flipped = rho, flipped

    def acquisition(self, samples: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(a, μ) over `samples`: a = μ − κσ of the members' z-scored predictions and
        posterior deviations (lower = better; see the module doc); μ alone is the predicted
        rank score."""
        x = self._x(samples)
        members = self.members()
        p = np.stack([np.asarray(m.predict(x), dtype=np.float64) for m in members])  # (K, N)
        z = _zscore(p)
        mu = z.mean(0)
        var = z.var(0)  # the members' disagreement …
        sd = p.std(axis=1)
        for k, m in enumerate(members):  # … plus the mean of their own posterior variances
            if callable(getattr(m, "predict_std", None)):
                s_k = np.asarray(m.predict_std(x), dtype=np.float64)
                var = var + (s_k / (sd[k] if sd[k] > 1e-12 else 1.0)) ** 2 / len(members)
        return mu - self.explore * np.sqrt(var), mu

    def rank_scores(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted goodness of `samples` in rank space (N,), lower = predicted better.

        Before `MIN_LABELS` strong labels: the weak proxy (column 0 of `weak_fn`), or
        zeros without one.
        """
        samples = [self.space.canonical(s) for s in samples]
        if len(self.labelled) < MIN_LABELS:
            if self.weak_fn is None:
                return np.zeros(len(samples))
            return np.asarray(self.weak_fn(samples), dtype=np.float64).reshape(len(samples), -1)[
                :, 0
            ]
        return self.acquisition(samples)[1]

    # -- candidates ----------------------------------------------------------------------------
    def stall(self) -> int:
        """Labels told since the best observed value last improved."""
        best, since = math.inf, 0
        for _, v in self.labelled.values():  # in the order told
            loss = self.primary.sign * v
            if loss < best:
                best, since = loss, 0
            else:
                since += 1
        return since

    def _radius(self) -> int:
        """The mutation radius' factor 2^⌊stall / STALL⌋ (see the module doc)."""
        return 2 ** min(self.stall() // STALL, MAX_DOUBLINGS)

    def _parents(self) -> np.ndarray:
        """Option indices (P, labels) of the best told architectures, best first."""
        items = sorted(self.labelled.values(), key=lambda it: self.primary.sign * it[1])
        top = max(4, math.ceil(0.2 * len(items)))
        return self.space.encode([s for s, _ in items[:top]], kind="index")

    def _candidates(self) -> list[Sample]:
        """Mutations and crossovers of the best told, random draws, the rest of the weak
        pool: canonical, distinct, never asked, within the budgets."""
        rng, n = self.rng, self.n_candidates
        parents = self._parents()
        sizes = np.array([len(c) for _, c in self.space.items()])
        n_mut = round(self.mutation_share * n)
        n_rand = round(self.random_share * n)
        n_cross = n - n_mut - n_rand
        # mutations: 1–3 labels of a parent (better parents more often; more labels when the
        # search stalls), each to another option
        weights = 1.0 / np.arange(1, len(parents) + 1)
        pick = rng.choice(len(parents), size=n_mut, p=weights / weights.sum())
        mut = parents[pick].copy()
        mutable = np.flatnonzero(sizes > 1)
        n_labels = rng.choice([1, 2, 3], size=n_mut, p=[0.5, 0.3, 0.2]) * self._radius()
        n_labels = np.minimum(n_labels, max(3, len(mutable) // 8))
        for i in range(n_mut):  # O(candidates) small numpy ops, not per label of a sample
            labs = rng.choice(mutable, size=min(int(n_labels[i]), len(mutable)), replace=False)
            shift = 1 + rng.integers(0, sizes[labs] - 1)
            mut[i, labs] = (mut[i, labs] + shift) % sizes[labs]
        # uniform crossover of two parents
        a, b = rng.integers(len(parents), size=(2, n_cross))
        mask = rng.random((n_cross, len(sizes))) < 0.5
        cross = np.where(mask, parents[a], parents[b])
        rand = rng.integers(0, sizes, size=(n_rand, len(sizes)))
        idx = np.concatenate([mut, cross, rand])
        fresh = self.space.decode(idx) + self.pool
        skip = self.asked | self.failed
        return self._within(self._distinct(fresh, skip))

    # -- rounds --------------------------------------------------------------------------------
    def _strata(self, samples: list[Sample]) -> np.ndarray:
        """Stratum of each sample: quantile bin of the stratifying cost (0 without one)."""
        if self.stratum is None or self.cost_fn is None or self.n_bins == 1:
            return np.zeros(len(samples), dtype=int)
        try:
            c = np.asarray(self.cost_fn(samples, (self.stratum,))[self.stratum], np.float64)
        except (ConfigError, KeyError):  # the second objective is a metric, not a cost
            self.stratum = None
            return np.zeros(len(samples), dtype=int)
        edges = np.quantile(c, np.linspace(0, 1, self.n_bins + 1)[1:-1])
        return np.searchsorted(edges, c)

    def _embed(self, samples: list[Sample]) -> np.ndarray:
        x = self._x(samples)
        if len(self.labelled) >= MIN_LABELS:
            return np.asarray(self.members()[0].embed(x), dtype=np.float64)
        return x.astype(np.float64)

    def _next_batch(self) -> list[Sample]:
        return self._ranked_batch(self.batch_size, self.asked | self.failed)

    def _ranked_batch(self, size: int, skip: set[str]) -> list[Sample]:
        """The ranker's `size` asks: the best by the acquisition of each latency stratum,
        thinned by farthest points (the weak proxy's before `MIN_LABELS` strong labels)."""
        if size <= 0:
            return []
        if len(self.labelled) < MIN_LABELS:
            free = [i for i, s in enumerate(self.pool) if sample_key(s) not in skip]
            cands = [self.pool[i] for i in free]
            score = self.weak[free, 0] if self.weak is not None else self.rng.random(len(free))
        else:
            cands = [c for c in self._candidates() if sample_key(c) not in skip]
            score = self.acquisition(cands)[0] if cands else np.zeros(0)
        if not cands:
            return []
        strata = self._strata(cands)
        n_strata = max(1, len(np.unique(strata)))
        # the best SHORTLIST of each stratum (at least 2 × size in all): room for the
        # farthest-point step to pass over near-copies of what was asked before
        per = int(np.ceil(max(2 * size, SHORTLIST * len(cands)) / n_strata))
        short = []
        for b in np.unique(strata):
            members = np.flatnonzero(strata == b)
            short += [int(i) for i in members[np.argsort(score[members], kind="stable")][:per]]
        short_s = [cands[i] for i in short]
        return self._thin(short_s, size)

    def _thin(self, short_s: list[Sample], size: int) -> list[Sample]:
        """`size` of `short_s` by farthest points, away from the told architectures."""
        done = [s for s, _ in self.labelled.values()]
        anchors = self._embed(done) if done else None
        pick = farthest_points(self._embed(short_s), size, anchors)
        return [short_s[i] for i in pick]

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self) -> Sample:
        self._ensure_pool()
        if not self.queue:
            self.queue = self._next_batch()
        self.n_asked += 1
        if not self.queue:
            log.warning("predictor-guided: no unasked candidate is left; asking a random one")
            return self.space.canonical(self.space.sample(rng=self.rng))
        s = self.queue.pop(0)
        self.asked.add(sample_key(s))
        return dict(s)

    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        self.n_told += 1
        s = self.space.canonical(sample)
        k = sample_key(s)
        self.asked.add(k)  # a warm start or a resumed trial is never asked again
        if (
            metrics is None
            or self.primary.name not in metrics
            or np.isnan(float(metrics[self.primary.name]))
        ):
            self.failed.add(k)
            return
        self.labelled[k] = (s, float(metrics[self.primary.name]))
        self.failed.discard(k)  # a retried trial that failed before

    def propose(self, k: int = 1) -> list[Sample]:
        """The predicted top-k of the told architectures and a fresh candidate set."""
        self._ensure_pool()
        if len(self.labelled) < MIN_LABELS:
            order = np.argsort(self.rank_scores(self.pool), kind="stable")
            return [dict(self.pool[i]) for i in order[:k]]
        told = self._within([s for s, _ in self.labelled.values()])
        cands = told + self._candidates()
        order = np.argsort(self.acquisition(cands)[1], kind="stable")
        return [dict(cands[i]) for i in order[:k]]

    def recommend(self, k: int = 1) -> list[Sample]:
        """The `k` told architectures the ensemble predicts best (μ, lower = better), best
        first; best observed first before `MIN_LABELS` labels.

        What to take from a noisy search: the "best predicted among the observed" rule of
        noisy Bayesian optimisation (Picheny, Wagner & Ginsbourger 2013, "A benchmark of
        kriging-based infill criteria for noisy optimization"), which weighs one
        observation against its neighbours'. Under heavy-tailed noise the best observation
        is often a lesser architecture's lucky draw; on `bench/ranking_benchmark.py` the
        recommendation's truth improves with every budget where the best observation's
        stalls (``recommended_truth``). The fit is a function of the labels told, so a call
        mid-search does not change what is asked next."""
        items = list(self.labelled.values())
        if len(items) < MIN_LABELS:
            score = np.array([self.primary.sign * v for _, v in items])
        else:
            score = self.acquisition([s for s, _ in items])[1]
        return [dict(items[i][0]) for i in np.argsort(score, kind="stable")[:k]]

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "pool": self.pool,
            "weak": None if self.weak is None else self.weak.tolist(),
            "labelled": [[s, v] for s, v in self.labelled.values()],
            "failed": sorted(self.failed),
            "asked": sorted(self.asked),
            "queue": list(self.queue),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool = [dict(s) for s in state["pool"]]
        self.weak = None if state["weak"] is None else np.asarray(state["weak"], dtype=np.float64)
        self.labelled = {sample_key(s): (dict(s), float(v)) for s, v in state["labelled"]}
        self.failed = set(state["failed"])
        self.asked = set(state["asked"])
        self.queue = [dict(s) for s in state["queue"]]
        self._members, self._fitted_on, self._bases = None, -1, None
        self._weak_stats, self.weak_rho, self.weak_flipped = None, None, []
