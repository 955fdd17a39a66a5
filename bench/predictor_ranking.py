"""How well each predictor ranks fine-tuned digits U-Nets from 20, 50 and 100 strong labels.

Data: the cached labels of `bench/digits_labels.py` (random `mobile_unet` architectures; weak
labels = supernet validation loss with inherited weights + the cost table's latency, params,
bytes; strong label = validation loss after a short fine-tune). The ranking problem is the
one AceNAS poses (Zhang et al. 2021, "AceNAS: Learning to Rank Ace Neural Architectures with
Weak Supervision of Weight Sharing"): order architectures by their strong label from few
strong labels and many weak ones.

Protocol, per seed: a random permutation of the N labelled architectures; the first
`--test` are held out (the same held-out set for every method and label budget of that
seed), the first n of the rest are the training labels (n ∈ `--budgets`, clipped to what is
left). Methods (lower predicted = better, as the labels):

- ``lambdarank``: `LambdaRankPredictor` (Burges 2010, LambdaRank on NDCG) on the strong
  labels only;
- ``lambdarank+weak``: the same, first pretrained on the weak labels of ALL N architectures
  (held-out ones included: weak labels are cheap and known before any strong label is bought);
- ``gbdt``, ``rf``, ``mlp``: scikit-learn regressors on the strong labels only;
- ``gbdt+supernet``: GBDT whose features also hold the (standardized) supernet score — a
  baseline that uses the weak label too, so the pretrained ranker has a fair rival;
- ``params``, ``macs``: zero-cost "bigger is better" rankers (White et al. 2021);
- ``supernet``: the weak label alone (rank by supernet validation loss; no strong label).

Features: the space's one-hot encoding + standardized log latency, params and MACs
(`SpaceEncoder`). Metrics on the held-out set: Kendall τ, NDCG@10 (rank-based grades,
`predictors.metrics`), Spearman ρ, precision@10, and the regret of the predicted top 10
(best true loss among them minus the held-out best). Reported as mean ± std over seeds.
Prints JSON and writes it to ``bench/results/predictor_ranking.json``.

    .venv/bin/python bench/predictor_ranking.py [--seeds 5] [--budgets 20 50 100] [--test 50]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
import digits_labels as dl

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
from record import publish

from nas import get_space
from predictors import (
    SpaceEncoder,
    best_true_of_top_k,
    kendall_tau,
    make_predictor,
    ndcg_at_k,
    precision_at_k,
    spearman,
)

log = logging.getLogger(__name__)

RESULT = dl.ROOT / "bench" / "results" / "predictor_ranking.json"
METHODS = (
    "lambdarank",
    "lambdarank+weak",
    "gbdt",
    "gbdt+supernet",
    "rf",
    "mlp",
    "params",
    "macs",
    "supernet",
)
METRICS = ("kendall_tau", "ndcg@10", "spearman", "precision@10", "regret@10")
COST_FEATURES = ("latency_ms", "params", "macs")


def weak_matrix(cols: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 4) weak labels for pretraining: supernet loss, latency, log params, log bytes."""
    return np.stack(
        [
            cols["supernet_val_loss"],
            cols["latency_ms"],
            np.log(cols["params"]),
            np.log(cols["bytes"]),  # bytes also see the quant schemes' bit widths
        ],
        1,
    )


def zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / (v.std() or 1.0)


def scores(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "kendall_tau": kendall_tau(y_true, pred),
        "ndcg@10": ndcg_at_k(y_true, pred, 10),
        "spearman": spearman(y_true, pred),
        "precision@10": precision_at_k(y_true, pred, 10),
        "regret@10": best_true_of_top_k(y_true, pred, 10) - float(y_true.min()),
    }


def method_fns(
    X: np.ndarray, W: np.ndarray, sup: np.ndarray, enc: SpaceEncoder
) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]]:
    """name → f(train idx, train labels, test idx, seed) → predictions of the test rows.

    X (N, F) features of all architectures, W (N, H) their weak labels, sup (N,) the
    standardized supernet score."""
    Xs = np.concatenate([X, sup[:, None].astype(np.float32)], 1)  # (N, F + 1)

    def lambdarank(weak: bool):
        def f(tr, y, te, seed):
            p = make_predictor("lambdarank", seed=seed)
            p.fit(X[tr], y, weak=(X, W) if weak else None)
            return p.predict(X[te])

        return f

    def sklearn(name: str, feats: np.ndarray):
        def f(tr, y, te, seed):
            return make_predictor(name, seed=seed).fit(feats[tr], y).predict(feats[te])

        return f

    def cost(name: str):
        def f(tr, y, te, seed):
            return make_predictor(name, encoder=enc).fit(X[tr]).predict(X[te])

        return f

    return {
        "lambdarank": lambdarank(False),
        "lambdarank+weak": lambdarank(True),
        "gbdt": sklearn("gbdt", X),
        "gbdt+supernet": sklearn("gbdt", Xs),
        "rf": sklearn("rf", X),
        "mlp": sklearn("mlp", X),
        "params": cost("params"),
        "macs": cost("macs"),
        "supernet": lambda tr, y, te, seed: sup[te],
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """method → labels → metric → mean / std over seeds (and the seed count)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["method"], {}).setdefault(str(r["labels"]), []).append(r)
    return {
        m: {
            n: {
                **{
                    k: {
                        "mean": float(np.nanmean([r[k] for r in rs])),
                        "std": float(np.nanstd([r[k] for r in rs])),
                    }
                    for k in (*METRICS, "fit_s")
                },
                "seeds": len(rs),
            }
            for n, rs in by_n.items()
        }
        for m, by_n in out.items()
    }


def run(
    labels_csv: Path,
    budgets: Sequence[int],
    seeds: int,
    n_test: int,
    methods: Sequence[str],
) -> dict[str, Any]:
    space = get_space(dl.SupernetSettings().space).space()
    samples, cols = dl.read_labels(labels_csv, space)
    n = len(samples)
    if n < n_test + min(budgets):
        raise SystemExit(
            f"{labels_csv} has {n} architectures; {n_test} held out + {min(budgets)} training "
            "labels need more: generate more rows or lower --test"
        )
    y = cols[dl.STRONG_COLUMN]
    enc = SpaceEncoder(
        space, "onehot", cost_model=dl.cost_model(space), cost_features=COST_FEATURES
    )
    X = enc.fit_transform(samples)  # (N, F); cost statistics from all N (no labels involved)
    W = weak_matrix(cols)
    sup = zscore(cols["supernet_val_loss"])
    fns = method_fns(X, W, sup, enc)
    avail = n - n_test
    used = sorted({min(b, avail) for b in budgets})
    if used != sorted(set(budgets)):
        log.warning(
            "label budgets %s clipped to %s (%d rows, %d held out)", budgets, used, n, n_test
        )
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        perm = np.random.default_rng(seed).permutation(n)
        te, rest = perm[:n_test], perm[n_test:]
        for b in used:
            tr = rest[:b]
            for name in methods:
                t0 = time.perf_counter()
                with torch.random.fork_rng(devices=[]):
                    pred = np.asarray(fns[name](tr, y[tr], te, seed), dtype=np.float64)
                rows.append(
                    {
                        "method": name,
                        "labels": int(b),
                        "seed": seed,
                        **scores(y[te], pred),
                        "fit_s": time.perf_counter() - t0,
                    }
                )
                log.info("seed %d, %d labels, %-16s τ %.3f", seed, b, name, rows[-1]["kendall_tau"])
    prov_path = labels_csv.with_suffix(".json")
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    all_corr = {
        k: kendall_tau(y, cols[k] if k == "supernet_val_loss" else -cols[k])
        for k in dl.WEAK_COLUMNS
    }
    return {
        "bench": "predictor_ranking",
        "data": {
            "csv": str(labels_csv.relative_to(dl.ROOT))
            if labels_csv.is_relative_to(dl.ROOT)
            else str(labels_csv),
            "architectures": n,
            "held_out": n_test,
            "label_budgets": used,
            "seeds": seeds,
            "strong_label": f"{dl.STRONG_COLUMN} (lower is better)",
            "supernet": prov.get("supernet_settings"),
            "label_settings": prov.get("labels"),
            "strong_label_range": [float(y.min()), float(y.max())],
            "kendall_tau_with_strong_over_all_rows": {
                ("supernet_val_loss" if k == "supernet_val_loss" else f"-{k}"): float(v)
                for k, v in all_corr.items()
            },
        },
        "features": enc.n_features,
        "weak_labels_for_pretraining": [
            "supernet_val_loss",
            "latency_ms",
            "log params",
            "log bytes",
        ],
        "summary": summarize(rows),
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default=str(dl.LABELS_CSV), help="cached labels CSV")
    ap.add_argument("--budgets", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--test", type=int, default=50, help="held-out architectures per seed")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = run(Path(args.labels), args.budgets, args.seeds, args.test, args.methods)
    publish(out, args.out)


if __name__ == "__main__":
    main()
