"""Hypervolume vs evaluations of random, evolution, NSGA-II and predictor-guided search.

One problem for every strategy: the digits `mobile_unet` space with two objectives to
minimize, ``val_loss`` — the validation loss of the sub-network with the trained supernet's
inherited weights (`bench/digits_labels.py`'s cached supernet; `--val-images` held-out
digits × `--val-timesteps` fixed timesteps), the "truth" of this bench — and ``latency_ms``
from the shipped onnxruntime CPU table. Each strategy gets E evaluations (`--evals`) per
seed; the hypervolume (Zitzler & Thiele 1998; exact 2-D sweep in `nas.pareto`) of the
evaluated set is recorded after every evaluation against ONE reference point for all runs:
by default the worst value of each objective over every evaluation of every run, pushed out
by 5 % of that objective's observed range (or `--ref`).

Strategies (`nas.strategies`): ``random`` (Li & Talwalkar 2019), ``evolution`` (regularized
evolution, Real et al. 2019; population 12, tournament 4, 2 labels mutated per child — the
default population of 50 would never leave its random warm-up within E), ``nsga2`` (Optuna,
Deb et al. 2002; population 10), ``predictor`` (AceNAS-style `PredictorGuided`, Zhang et al.
2021: pool of 256, batches of 4, 4 latency strata, LambdaRank ranker). Its weak labels must
cost less than the truth, so they are zero-cost: column 0 (the proxy that ranks the pool
before any strong label) is −log(params) ("bigger is better", White et al. 2021), then the
table's latency (the strata), log MACs and −log bytes. ``predictor-lofi`` (optional) uses
instead the supernet loss on `--lofi-images` images × 2 timesteps as column 0; the seconds
it spends on its pool are reported in truth-evaluation equivalents (they are NOT counted
as evaluations on the x axis).

Evaluations are cached per architecture hash (in memory and in a JSON file under the
gitignored ``runs/bench/``), so an architecture asked by several strategies or seeds is
evaluated once. Prints JSON (HV after 10, 20, …, E evaluations, mean ± std over seeds), and
writes it to ``bench/results/search_efficiency.json`` with the curves' PNG beside it.

    .venv/bin/python bench/search_efficiency.py [--evals 40] [--seeds 3]
        [--strategies random evolution nsga2 predictor]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
import digits_labels as dl
from record import publish

from latency_tables.cost import CostModel
from nas.pareto import hypervolume_curve, nondominated_mask, plot_hypervolume
from nas.space import SearchSpace
from nas.strategies import Objective, Strategy, make_strategy
from nas.strategies.predictor_guided import PredictorGuided
from nas.supernet import Supernet
from nas.tasks.digits import DigitsDenoising
from predictors import SpaceEncoder, make_predictor

log = logging.getLogger(__name__)

RESULT = dl.ROOT / "bench" / "results" / "search_efficiency.json"
OBJECTIVES = (Objective("val_loss", "min"), Objective("latency_ms", "min"))
OBJ_DIRS = {o.name: o.direction for o in OBJECTIVES}
STRATEGY_NAMES = ("random", "evolution", "nsga2", "predictor", "predictor-lofi")
REF_MARGIN = 0.05
COST_FEATURES = ("latency_ms", "params", "macs")  # encoder inputs of the ranker


class CachedSupernetScore:
    """Supernet validation loss of samples, cached per spec hash (memory + JSON file)."""

    def __init__(self, supernet: Supernet, task: DigitsDenoising, path: Path | None) -> None:
        self.supernet, self.task, self.path = supernet, task, path
        self.cache: dict[str, list[float]] = {}  # hash → [val_loss, seconds]
        if path is not None and path.is_file():
            self.cache = json.loads(path.read_text())
        self.hits = self.misses = 0
        self.seconds = 0.0  # spent on misses in this run

    def __call__(self, sample: Mapping[str, Any]) -> float:
        h = self.supernet.space.freeze(sample).hash
        if h in self.cache:
            self.hits += 1
            return self.cache[h][0]
        t0 = time.perf_counter()
        with torch.no_grad(), self.supernet.activate(sample):
            v = float(self.task.validate(self.supernet)["val_loss"])
        dt = time.perf_counter() - t0
        self.cache[h] = [v, dt]
        self.misses += 1
        self.seconds += dt
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.cache))
        return v

    def many(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self(s) for s in samples])

    def mean_seconds(self) -> float:
        return float(np.mean([v[1] for v in self.cache.values()])) if self.cache else float("nan")


def zero_cost_weak(cost: CostModel):
    """weak_fn: (N, 4) = [−log params, latency_ms, log MACs, −log bytes] (lower = better)."""

    def fn(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        c = cost.costs(samples, ("params", "latency_ms", "macs", "bytes"))
        return np.stack(
            [-np.log(c["params"]), c["latency_ms"], np.log(c["macs"]), -np.log(c["bytes"])], 1
        )

    return fn


def lofi_weak(cost: CostModel, lofi: CachedSupernetScore):
    """weak_fn: (N, 3) = [low-fidelity supernet loss, latency_ms, −log params]."""

    def fn(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        c = cost.costs(samples, ("params", "latency_ms"))
        s = [lofi(x) for x in tqdm(samples, desc="lofi weak labels", leave=False)]
        return np.stack([np.asarray(s), c["latency_ms"], -np.log(c["params"])], 1)

    return fn


def build_strategy(
    name: str,
    space: SearchSpace,
    seed: int,
    cost: CostModel,
    lofi: CachedSupernetScore | None,
    pool: int = 256,
) -> Strategy:
    if name == "random":
        return make_strategy("random", space, OBJECTIVES, seed)
    if name == "evolution":
        return make_strategy(
            "evolution", space, OBJECTIVES, seed, population_size=12, sample_size=4, mutations=2
        )
    if name == "nsga2":
        return make_strategy("nsga2", space, OBJECTIVES, seed, population_size=10)
    if name in ("predictor", "predictor-lofi"):
        enc = SpaceEncoder(space, "onehot", cost_model=cost, cost_features=COST_FEATURES)
        weak = zero_cost_weak(cost) if name == "predictor" else lofi_weak(cost, lofi)
        return PredictorGuided(
            space,
            OBJECTIVES,
            seed,
            weak_fn=weak,
            encoder=enc,
            predictor_factory=lambda: make_predictor("lambdarank", seed=seed),
            cost_fn=cost.costs,
            pool_size=pool,
            batch_size=4,
            n_bins=4,
        )
    raise SystemExit(f"unknown strategy {name!r}; use one of {STRATEGY_NAMES}")


def run_one(
    name: str,
    seed: int,
    space: SearchSpace,
    cost: CostModel,
    truth: CachedSupernetScore,
    lofi: CachedSupernetScore | None,
    evals: int,
    pool: int = 256,
) -> dict[str, Any]:
    """E ask/evaluate/tell rounds; the evaluated points in order and the timings."""
    strat = build_strategy(name, space, seed, cost, lofi, pool)
    t0 = time.perf_counter()
    lofi_s0 = lofi.seconds if lofi is not None else 0.0
    truth_s0 = truth.seconds
    points, hashes = [], []
    for _ in tqdm(range(evals), desc=f"{name} seed {seed}", leave=False):
        s = strat.ask()
        m = {
            "val_loss": truth(s),
            "latency_ms": float(cost.costs([s], ("latency_ms",))["latency_ms"][0]),
        }
        strat.tell(s, m)
        points.append([m["val_loss"], m["latency_ms"]])
        hashes.append(space.freeze(s).hash)
    wall = time.perf_counter() - t0
    return {
        "strategy": name,
        "seed": seed,
        "points": points,
        "distinct": len(set(hashes)),
        "wall_s": wall,
        "truth_s_new": truth.seconds - truth_s0,
        "weak_s_new": (lofi.seconds - lofi_s0) if lofi is not None else 0.0,
        "strategy_s": wall
        - (truth.seconds - truth_s0)
        - ((lofi.seconds - lofi_s0) if lofi is not None else 0.0),
    }


def reference_point(runs: list[dict[str, Any]]) -> list[float]:
    """Worst value of each objective over all runs + 5 % of its observed range."""
    y = np.concatenate([np.asarray(r["points"]) for r in runs])  # (total, 2)
    lo, hi = y.min(0), y.max(0)
    return [float(v) for v in hi + REF_MARGIN * (hi - lo)]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--strategies",
        nargs="+",
        default=["random", "evolution", "nsga2", "predictor"],
        choices=STRATEGY_NAMES,
    )
    ap.add_argument("--val-images", type=int, default=16)
    ap.add_argument("--val-timesteps", type=int, default=4)
    ap.add_argument("--lofi-images", type=int, default=4)
    ap.add_argument("--pool", type=int, default=256, help="predictor-guided pool size")
    ap.add_argument("--supernet-steps", type=int, default=dl.SupernetSettings.steps)
    ap.add_argument("--ref", type=float, nargs=2, default=None, help="val_loss latency_ms")
    ap.add_argument("--ckpt", default=str(dl.DEFAULT_CKPT), help="supernet checkpoint dir")
    ap.add_argument("--cache-dir", default=str(dl.ROOT / "runs" / "bench"), help="eval caches")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    sn_settings = dl.SupernetSettings(steps=args.supernet_steps)
    supernet, sn_info = dl.trained_supernet(sn_settings, args.ckpt, progress=False)
    space = supernet.space
    cost = dl.cost_model(space)
    tag = sn_info["model_sha256"][:12]
    cache_dir = Path(args.cache_dir)
    task = dl.make_task(supernet, args.val_images, args.val_timesteps, sn_settings.task_seed)
    truth = CachedSupernetScore(
        supernet,
        task,
        cache_dir / f"search_truth_{tag}_{args.val_images}x{args.val_timesteps}.json",
    )
    lofi = None
    if "predictor-lofi" in args.strategies:
        lofi_task = dl.make_task(supernet, args.lofi_images, 2, sn_settings.task_seed)
        lofi = CachedSupernetScore(
            supernet, lofi_task, cache_dir / f"search_lofi_{tag}_{args.lofi_images}x2.json"
        )

    runs = []
    for name in args.strategies:
        for seed in range(args.seeds):
            r = run_one(name, seed, space, cost, truth, lofi, args.evals, args.pool)
            runs.append(r)
            best = min(p[0] for p in r["points"])
            log.info("%s seed %d: best val_loss %.4f, %.0f s", name, seed, best, r["wall_s"])

    ref = list(args.ref) if args.ref else reference_point(runs)
    curves: dict[str, list[np.ndarray]] = {}
    for r in runs:
        c = hypervolume_curve(np.asarray(r["points"]), OBJ_DIRS, ref)
        r["hv_curve"] = [float(v) for v in c]
        curves.setdefault(r["strategy"], []).append(c)
    checkpoints = sorted({*range(10, args.evals + 1, 10), args.evals})
    # the HV of every evaluation of every run: the scale against which gaps are read
    all_y = np.concatenate([np.asarray(r["points"]) for r in runs])  # (runs · E, 2)
    union_hv = float(hypervolume_curve(all_y, OBJ_DIRS, ref)[-1])
    summary = {}
    for name, cs in curves.items():
        mat = np.stack(cs)  # (seeds, E)
        rs = [r for r in runs if r["strategy"] == name]
        summary[name] = {
            "hv": {
                str(k): {"mean": float(mat[:, k - 1].mean()), "std": float(mat[:, k - 1].std())}
                for k in checkpoints
            },
            "hv_share_of_union": {
                str(k): {
                    "mean": float(mat[:, k - 1].mean() / union_hv),
                    "std": float(mat[:, k - 1].std() / union_hv),
                }
                for k in checkpoints
            },
            "best_val_loss": {
                "mean": float(np.mean([min(p[0] for p in r["points"]) for r in rs])),
                "std": float(np.std([min(p[0] for p in r["points"]) for r in rs])),
            },
            "front_size_at_E": float(
                np.mean([nondominated_mask(np.asarray(r["points"])).sum() for r in rs])
            ),
            "distinct_archs": float(np.mean([r["distinct"] for r in rs])),
            "strategy_overhead_s": float(np.mean([r["strategy_s"] for r in rs])),
            "weak_label_s": float(np.mean([r["weak_s_new"] for r in rs])),
        }
    truth_eval_s = truth.mean_seconds()
    if lofi is not None and "predictor-lofi" in summary:
        pool_s = float(np.sum([v[1] for v in lofi.cache.values()])) / max(1, args.seeds)
        summary["predictor-lofi"]["weak_label_truth_equivalents_per_seed"] = (
            pool_s / truth_eval_s if truth_eval_s > 0 else None
        )
    png = Path(args.out).with_suffix(".png")
    plot_hypervolume(curves, png, ylabel="hypervolume [ε-MSE × ms]")
    out = {
        "bench": "search_efficiency",
        "space": sn_settings.space,
        "objectives": OBJ_DIRS,
        "truth": f"supernet val_loss on {args.val_images} held-out digits × "
        f"{args.val_timesteps} timesteps (inherited weights), latency_ms from the "
        f"{dl.LATENCY_DEVICE}/{dl.LATENCY_BACKEND} table",
        "supernet": {**sn_info, "settings": asdict(sn_settings)},
        "evals": args.evals,
        "seeds": args.seeds,
        "reference_point": {"val_loss": ref[0], "latency_ms": ref[1]},
        "reference_rule": "given by --ref"
        if args.ref
        else f"max over all evaluations of all runs + {REF_MARGIN:.0%} of the observed range",
        "hv_of_all_evaluations_union": union_hv,
        "summary": summary,
        "cache": {
            "truth_evaluations": len(truth.cache),
            "hits": truth.hits,
            "misses": truth.misses,
            "mean_truth_eval_s": truth_eval_s,
        },
        "runtime_s": time.perf_counter() - t_start,
        "plot": str(png.relative_to(dl.ROOT)) if png.is_relative_to(dl.ROOT) else str(png),
        "runs": runs,
    }
    publish(out, args.out, quiet=("runs",))


if __name__ == "__main__":
    main()
