"""How well `nas latency adapt` predicts a new device from N end-to-end runs.

The "new device" is another runtime on this host (by default eager PyTorch, whose integer
kernels run as fp32: a cost profile unlike the source tables'); the sources are the shipped
tables of `--from` (by default this host's onnxruntime table, and onnxruntime + tflite).
In one interleaved timing run (as `nas latency validate` times: rounds over all models,
each model's best round) it measures

- a training pool of `--pool` architectures picked as `nas latency adapt` picks them
  (spread over the first source's latency quantiles; `latency_tables.adapt.spread_samples`),
- `--held-out` random architectures, and
- `--searched` deep/narrow architectures (of 4000 random ones under the median predicted
  latency, those with the most blocks: the shape latency-constrained searches pick),

then, for N in `--ns`, fits on `--repeats` spread subsets of N pool architectures and
reports on both evaluation sets, mean ± std over the subsets, for

- ``transfer``: eq. (1)–(2) of `latency_tables.transfer` (what `nas latency adapt` writes),
- ``from_scratch``: ridge regression (λ by leave-one-out) on MACs, params and block counts
  per kind, fitted on the same N measurements,
- ``source_unchanged``: the first source table's sum as it is (no fit).

Prints JSON and, with ``--out``, writes it and a plot of Spearman ρ and the ±10% share
against N next to it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_transfer.py [--target torch]
        [--from cpu-x86_64/onnxruntime ...] [--ns 5 10 20 50] [--out bench/results/x.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import search_spaces  # noqa: F401
from latency_tables.adapt import spread_samples
from latency_tables.backends import BACKENDS
from latency_tables.cost import CostModel
from latency_tables.table import DATA_ROOT, LatencyTable
from latency_tables.transfer import append_log, fit_transfer, group_sums, kind_counts, read_log
from latency_tables.validate import metrics, runnable_samples, time_end_to_end
from nas import SPACES
from nas.spec import ArchSpec

METHODS = ("transfer", "from_scratch", "source_unchanged")
REPORTED = ("spearman", "kendall_tau", "within_10pct", "mape_pct")


def deep_narrow(space, cost: CostModel, backend, n: int, seed: int) -> list[dict[str, Any]]:
    """Of 4000 random runnable samples under the median predicted latency, the `n` with the
    most blocks (ties: the faster first)."""
    cand = runnable_samples(space, backend, space.sample_many(4000, rng=seed))
    lat = cost.costs(cand, ("table_ms",))["table_ms"]
    blocks = np.array([len(space.freeze(s).blocks) for s in cand])
    ok = np.flatnonzero(lat <= np.median(lat))
    order = ok[np.lexsort((lat[ok], -blocks[ok]))]
    return [cand[i] for i in order[:n]]


def scratch_features(
    specs: Sequence[ArchSpec], cost: CostModel, counts: Mapping[str, np.ndarray]
) -> np.ndarray:
    """MACs (G), params (M) and the block count of every kind, per architecture."""
    got = cost.costs(list(specs), ("macs", "params"))
    return np.column_stack([got["macs"] / 1e9, got["params"] / 1e6, *counts.values()])


def fit_scratch(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """Ridge on standardised features, λ by (efficient) leave-one-out."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25)))
    return model.fit(x, y).predict(x_eval)


def run_log(out: Path | None, specs: Sequence[ArchSpec], sets: Sequence[str]):
    """`known` and `record` of `time_end_to_end` over ``<out>.runs.jsonl`` (none without --out)."""
    if out is None:
        return {}, None
    where = out.with_suffix(".runs.jsonl")
    index = {s.hash: i for i, s in enumerate(specs)}
    known = {
        (index[r["hash"]], int(r["round"])): float(r["ms"])
        for r in read_log(where)
        if r["hash"] in index
    }

    def record(i: int, r: int, ms: float) -> None:
        append_log(
            where,
            {
                "hash": specs[i].hash,
                "set": sets[i],
                "round": r,
                "ms": ms,
                "sample": specs[i].sample_dict,
            },
        )

    return known, record


def spread_subset(order: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` of the pool (sorted by source latency: `order`) at jittered evenly spaced quantiles."""
    if n >= len(order):
        return order
    pos = ((np.arange(n) + rng.uniform(0, 1, n)) / n * len(order)).astype(int)
    return order[np.minimum(pos, len(order) - 1)]


def take(sums: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {g: v[idx] for g, v in sums.items()}


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        k: {
            "mean": float(np.mean([r[k] for r in runs])),
            "std": float(np.std([r[k] for r in runs])),
        }
        for k in REPORTED
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["eval_sets"])
    fig, axes = plt.subplots(len(sets), 2, figsize=(9, 3.2 * len(sets)), dpi=110, squeeze=False)
    for row, name in enumerate(sets):
        for col, metric in enumerate(("spearman", "within_10pct")):
            ax = axes[row, col]
            for label, cfg in report["configs"].items():
                for method in METHODS:
                    if method != "transfer" and label != next(iter(report["configs"])):
                        continue  # the baselines do not depend on the sources beyond the first
                    ns = sorted(int(n) for n in cfg["by_n"])
                    mean = [cfg["by_n"][str(n)][method][name][metric]["mean"] for n in ns]
                    std = [cfg["by_n"][str(n)][method][name][metric]["std"] for n in ns]
                    tag = f"{method} ({label})" if method == "transfer" else method
                    ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, label=tag)
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.set_xlabel("measured architectures on the new device (N)")
            ax.set_ylabel(metric)
            ax.set_title(f"{name} archs", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"{report['space']}: {report['target']} from {list(report['configs'])}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobile_unet")
    ap.add_argument("--tables", default=str(DATA_ROOT))
    ap.add_argument(
        "--from",
        dest="sources",
        action="append",
        help="source DEVICE/BACKEND; repeat for several (default: cpu-x86_64/onnxruntime, "
        "then also cpu-x86_64/tflite)",
    )
    ap.add_argument("--target", default="torch", help="the new device's backend on this host")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pool", type=int, default=50)
    ap.add_argument("--held-out", type=int, default=30)
    ap.add_argument("--searched", type=int, default=10)
    ap.add_argument("--ns", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if max(args.ns) > args.pool:
        ap.error(f"--ns goes up to {max(args.ns)} but --pool is {args.pool}")

    names = args.sources or ["cpu-x86_64/onnxruntime", "cpu-x86_64/tflite"]
    tables = {n: LatencyTable.load(args.tables, *n.split("/")) for n in names}
    configs = {names[0]: [names[0]]}
    if len(names) > 1:
        configs["+".join(names)] = names
    entry = SPACES.get(args.space)
    space = entry.space()
    cost = CostModel(space, tables[names[0]], strict=True)
    backend = BACKENDS.get(args.target)(threads=args.threads, warmup=args.warmup, runs=args.runs)

    pool = spread_samples(space, cost, backend, args.pool, args.seed)
    held = runnable_samples(space, backend, space.sample_many(args.held_out, rng=args.seed + 1))
    searched = deep_narrow(space, cost, backend, args.searched, args.seed + 2)
    specs = [space.freeze(s) for s in pool + held + searched]
    t0 = time.perf_counter()
    batch = int(tables[names[0]].meta.get("batch", 1))
    statistic = tables[names[0]].statistic
    # every run is kept beside the JSON, so a rerun (another model, other N) times nothing
    known, record = run_log(
        args.out,
        specs,
        [*(["pool"] * len(pool)), *(["random"] * len(held)), *(["searched"] * len(searched))],
    )
    measured = time_end_to_end(
        entry, backend, specs, batch, statistic, args.rounds, True, known=known, record=record
    ).min(0)
    timing_s = time.perf_counter() - t0

    n_pool, n_held = len(pool), len(held)
    sets = {
        "random": np.arange(n_pool, n_pool + n_held),
        "searched": np.arange(n_pool + n_held, len(specs)),
    }
    sums = {n: group_sums(specs, t) for n, t in tables.items()}
    counts = kind_counts(specs)
    feats = scratch_features(specs, cost, counts)
    unchanged = sum(sums[names[0]].values())
    order = np.argsort(unchanged[:n_pool], kind="stable")

    report: dict[str, Any] = {
        "space": args.space,
        "target": f"{args.target} (threads={args.threads}) on this host",
        "statistic": statistic,
        "rounds": args.rounds,
        "archs": {"pool": n_pool, **{k: len(v) for k, v in sets.items()}},
        "measured_ms": {
            k: {"min": float(measured[v].min()), "max": float(measured[v].max())}
            for k, v in {"pool": np.arange(n_pool), **sets}.items()
        },
        "timing_seconds": round(timing_s, 1),
        "runs_reused": len(known),  # from an earlier run's log: not timed again
        "eval_sets": {k: len(v) for k, v in sets.items()},
        "configs": {},
    }
    for label, srcs in configs.items():
        by_n: dict[str, Any] = {}
        for n in args.ns:
            rng = np.random.default_rng([args.seed, n])
            reps = 1 if n >= n_pool else args.repeats
            runs: dict[str, dict[str, list[dict[str, float]]]] = {
                m: {k: [] for k in sets} for m in METHODS
            }
            for _ in range(reps):
                idx = spread_subset(order, n, rng)
                model, _ = fit_transfer(
                    srcs, [take(sums[s], idx) for s in srcs], measured[idx], take(counts, idx)
                )
                for k, ev in sets.items():
                    pred = {
                        "transfer": model.predict(
                            {s: take(sums[s], ev) for s in srcs}, take(counts, ev)
                        ),
                        "from_scratch": fit_scratch(feats[idx], measured[idx], feats[ev]),
                        "source_unchanged": unchanged[ev],
                    }
                    for m in METHODS:
                        runs[m][k].append(metrics(pred[m], measured[ev]))
            by_n[str(n)] = {
                "repeats": reps,
                **{m: {k: summarise(v) for k, v in runs[m].items()} for m in METHODS},
            }
        report["configs"][label] = {"sources": srcs, "by_n": by_n}
    # one line per (sources, set, method): N → "ρ / ±10% share" (means over the subsets)
    report["headline"] = {
        f"{label} | {k} | {m}": {
            n: f"{c[m][k]['spearman']['mean']:.3f} / {c[m][k]['within_10pct']['mean']:.2f}"
            for n, c in cfg["by_n"].items()
        }
        for label, cfg in report["configs"].items()
        for k in sets
        for m in METHODS
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        plot(report, args.out.with_suffix(".png"))
        report["plot"] = str(args.out.with_suffix(".png"))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
