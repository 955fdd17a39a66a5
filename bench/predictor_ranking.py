"""How well each registered predictor ranks architectures from few labels (SKELETON).

For a space, a pool of architectures with weak labels and a held-out set with true
scores: for every predictor in `predictors.PREDICTORS`, every label budget and seed,
fits on `n` strong labels (LambdaRank also pretrains on the pool's weak labels) and
reports Kendall τ, Spearman ρ, NDCG@10, precision@10 and the best true score among the
predicted top 10 on the held-out set. Prints JSON.

    .venv/bin/python bench/predictor_ranking.py [--space test_mobile_unet] [--budgets 20 50 100]

TODO (lead): wire the true scores (`true_scores`: trained-subnet task losses) and the
weak labels (`weak_labels`: supernet scores of the pool, plus costs). Until then the
script runs on a stand-in (`--truth stand-in`): a nonlinear function of params and MACs
plus noise, which only checks the plumbing — its figures say nothing about real search.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import search_spaces  # noqa: F401
from latency_tables.cost import CostModel
from nas import get_space
from predictors import (
    PREDICTORS,
    SpaceEncoder,
    best_true_of_top_k,
    kendall_tau,
    make_predictor,
    ndcg_at_k,
    precision_at_k,
    spearman,
)


def stand_in_truth(cost: CostModel, samples, seed: int) -> np.ndarray:
    """A loss-like stand-in (lower is better): diminishing returns in params, MACs."""
    c = cost.costs(samples, ("params", "macs"))
    rng = np.random.default_rng(seed)
    lp, lm = np.log(c["params"]), np.log(c["macs"])
    lp, lm = (lp - lp.mean()) / lp.std(), (lm - lm.mean()) / lm.std()
    return np.exp(-0.7 * lp) + 0.5 * np.exp(-0.5 * lm) + 0.1 * rng.standard_normal(len(samples))


def true_scores(args, cost: CostModel, samples, seed: int) -> np.ndarray:
    if args.truth == "stand-in":
        return stand_in_truth(cost, samples, seed)
    raise NotImplementedError("wire the true scores of trained subnets here")


def weak_labels(args, cost: CostModel, samples, seed: int) -> np.ndarray:
    """(N, H) weak labels of the pool: a noisy score and the costs."""
    if args.truth != "stand-in":
        raise NotImplementedError("wire the supernet scores of the pool here")
    c = cost.costs(samples, ("params", "macs"))
    noisy = stand_in_truth(cost, samples, seed) + 0.3 * np.random.default_rng(
        seed + 1
    ).standard_normal(len(samples))
    return np.stack([noisy, np.log(c["params"]), np.log(c["macs"])], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="test_mobile_unet")
    ap.add_argument("--truth", default="stand-in", choices=["stand-in", "real"])
    ap.add_argument("--budgets", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--predictors", nargs="+", default=PREDICTORS.names())
    args = ap.parse_args()

    space = get_space(args.space).space()
    cost = CostModel(space, None)
    enc = SpaceEncoder(space, cost_model=cost, cost_features=("params", "macs"))
    pool = space.sample_many(args.pool, rng=10_000)
    X_pool = enc.fit_transform(pool)
    W_pool = weak_labels(args, cost, pool, seed=10_000)
    test = space.sample_many(args.test, rng=20_000)
    X_test, y_test = enc.transform(test), true_scores(args, cost, test, seed=20_000)

    rows = []
    for name in args.predictors:
        for n in args.budgets:
            for seed in range(args.seeds):
                train = space.sample_many(n, rng=seed)
                X, y = enc.transform(train), true_scores(args, cost, train, seed=seed)
                kw = {"encoder": enc} if not PREDICTORS.get(name).learned else {"seed": seed}
                t0 = time.perf_counter()
                weak = (X_pool, W_pool) if name == "lambdarank" else None
                p = make_predictor(name, **kw).fit(X, y, weak=weak)
                fit_s = time.perf_counter() - t0
                pr = p.predict(X_test)
                rows.append(
                    {
                        "predictor": name,
                        "labels": n,
                        "seed": seed,
                        "kendall_tau": kendall_tau(y_test, pr),
                        "spearman": spearman(y_test, pr),
                        "ndcg@10": ndcg_at_k(y_test, pr, 10),
                        "precision@10": precision_at_k(y_test, pr, 10),
                        "best_of_top10": best_true_of_top_k(y_test, pr, 10),
                        "fit_s": fit_s,
                    }
                )
    summary = {}
    for r in rows:
        key = f"{r['predictor']}@{r['labels']}"
        summary.setdefault(key, []).append(r)
    out = {
        "space": args.space,
        "truth": args.truth,
        "test_best": float(y_test.min()),
        "summary": {
            k: {
                m: float(np.mean([r[m] for r in v])) for m in v[0] if m not in ("predictor", "seed")
            }
            for k, v in summary.items()
        },
        "rows": rows,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
