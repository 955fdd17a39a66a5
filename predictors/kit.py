"""The default ranking kit of the predictor-guided search (`nas.ranking.default_kit`).

What `make_strategy("predictor", space, objectives)` uses when the caller injects
nothing, for any `SearchSpace`:

- encoder: `SpaceEncoder(space, "mixed")` — one-hot per label plus the option index of
  every numeric, ordered label (a width or a depth is also a magnitude);
- rankers: the additive GP of `predictors.additive_gp` (orders 1 and 2 over the
  encoder's labels, ARD; the weak labels as linear features) and a GP with one length
  scale (`predictors.gaussian_process`), both on rank normal scores, which the ensemble
  takes in turn. Kendall τ on 1000 held-out random archs of `bench/ranking_problems.py`
  after 25 / 50 / 100 random labels (seeds 0–2): LambdaRank pretrained on the weak labels
  0.40 / 0.57 / 0.73 (cell201), 0.28 / 0.34 / 0.47 (wide_interactions), 0.50 / 0.60 / 0.76
  (mixed_cardinality); the GP 0.48 / 0.69 / 0.78, 0.30 / 0.40 / 0.55, 0.69 / 0.82 / 0.85;
  the additive GP 0.48 / 0.65 / 0.77, 0.36 / 0.46 / 0.54, 0.72 / 0.85 / 0.89, and on
  digits_unet 0.35 / 0.23 / 0.44 where the GP predicts a constant below 200 labels.
  LambdaRank stays registered (and the application's `rankers`); the kit left it out;
- weak labels: the zero-cost proxies of White et al. 2021 ("How Powerful are Performance
  Predictors in Neural Architecture Search?", §4: params and MACs rank architectures
  about as well as many trained predictors at zero cost) that `cost_fn` can give:
  column 0 is −log params ("bigger is better"; −log MACs without params), then the
  table's ``latency_ms`` and log MACs. A cost function that gives none of them (a
  `from_choices` space has no layers to count), or no cost function: no weak labels,
  and the ranker learns from the strong labels alone. They are `nas.ranking.ZeroCost`:
  the search also gives them to the rankers as features of every candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import MqnasError
from nas.ranking import KITS, RankingKit, WeakFn, ZeroCost
from nas.space import SearchSpace
from predictors.base import Predictor, make_predictor
from predictors.encoders import SpaceEncoder

log = logging.getLogger(__name__)

ZERO_COST = ("params", "macs", "latency_ms")
STEPS = 150  # LambdaRank steps per fit: an ensemble is refitted every round


def available_costs(
    space: SearchSpace, cost_fn: Callable[..., Mapping[str, Any]] | None
) -> tuple[str, ...]:
    """The names of `ZERO_COST` that `cost_fn` gives finite, positive values for."""
    if cost_fn is None:
        return ()
    probe = [space.min(), space.max()]
    out = []
    for name in ZERO_COST:
        try:
            c = np.asarray(cost_fn(probe, (name,))[name], dtype=np.float64)
        except (MqnasError, KeyError, ValueError) as e:  # a cost this model cannot give
            log.debug("zero-cost weak labels: no %s (%s)", name, e)
            continue
        if np.all(np.isfinite(c)) and np.all(c > 0):
            out.append(name)
    return tuple(out)


def zero_cost_weak(
    space: SearchSpace, cost_fn: Callable[..., Mapping[str, Any]] | None
) -> WeakFn | None:
    """weak_fn of the available zero-cost proxies (see the module doc), or None."""
    names = available_costs(space, cost_fn)
    size = [n for n in ("params", "macs") if n in names]
    if not size:
        return None
    cols = [size[0], *(n for n in ("latency_ms", "macs") if n in names and n != size[0])]
    log.info("predictor-guided: zero-cost weak labels %s", cols)

    def weak(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        c = cost_fn(list(samples), tuple(cols))
        w = [np.log(np.asarray(c[n], dtype=np.float64)) for n in cols]
        w[0] = -w[0]  # the proxy of quality: a larger model is predicted to be better
        return np.stack(w, 1)

    return ZeroCost(weak)


def rankers(seed: int, device: str = "cpu") -> tuple[Callable[[], Predictor], ...]:
    """LambdaRank (on `device`) and the GP, seeded: the rankers of an experiment's search
    (`nas.app.pipeline.predictor_inputs`), whose encoder carries the cost features."""
    return (
        lambda: make_predictor("lambdarank", seed=seed, max_steps=STEPS, device=device),
        lambda: make_predictor("gp", seed=seed),
    )


def kit_rankers(encoder: SpaceEncoder, seed: int) -> tuple[Callable[[], Predictor], ...]:
    """Factories of the default kit's rankers over `encoder`'s features: the additive GP
    (which needs the encoder's label layout) and the GP, seeded."""
    layout = encoder.layout()
    return (
        lambda: make_predictor("additive_gp", layout=layout, seed=seed),
        lambda: make_predictor("gp", seed=seed),
    )


def default_kit(
    space: SearchSpace, cost_fn: Callable[..., Mapping[str, Any]] | None, seed: int
) -> RankingKit:
    encoder = SpaceEncoder(space, "mixed")
    return RankingKit(
        encoder=encoder,
        predictor_factory=kit_rankers(encoder, seed),
        weak_fn=zero_cost_weak(space, cost_fn),
    )


KITS.add("default", default_kit)
