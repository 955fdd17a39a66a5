"""Check a latency table against end-to-end measurements, and calibrate it.

`validate` measures two sets of whole models with the table's backend, in the same
interleaved rounds: random architectures, and *searched* ones (`searched_samples`: at
latency budgets spread over the random range, the architecture a budgeted search
prefers, deep and narrow). It compares each set with the table's prediction (MAPE,
share within ±5% / ±10%, Kendall τ, Spearman ρ), fits the residual model of
`latency_tables.calibration` on the random set only, and reports it by leave-one-out on
the random set and as fitted on the searched set, which it never saw. Beside them, each
set's repeatability: how well the measurement ranks the architectures against itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latency_tables.backends.base import Backend
from latency_tables.calibration import Calibration, calibration_path, loo_calibrated
from latency_tables.cost import CostModel
from latency_tables.kernels import kernel_of
from latency_tables.measurement import Measurement
from latency_tables.quiet import timing_context
from latency_tables.residual import DEFAULT_FEATURES, FEATURES, NONNEG_INTERCEPT
from nas.errors import ConfigError
from nas.io import read_json, write_json
from nas.quant.scheme import QuantScheme
from nas.space import Sample, SearchSpace
from nas.spec import ArchSpec
from nas.supernet import SpaceEntry

log = logging.getLogger(__name__)

FLOAT_KERNELS = ("fp16", "fp32")


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy import stats

    err = (np.asarray(predicted) - measured) / measured
    return {
        "mape_pct": float(100 * np.mean(np.abs(err))),
        "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "kendall_tau": float(stats.kendalltau(predicted, measured).statistic),
        "spearman": float(stats.spearmanr(predicted, measured).statistic),
    }


def runnable_samples(
    space: SearchSpace, backend: Backend, samples: Sequence[Mapping[str, Any]]
) -> list[Sample]:
    """`samples` as `backend` can run them end to end.

    Unchanged for most backends. On a one-float-precision backend (`adb`: fp16 is a
    model-wide switch) every float layer of sample i is set to fp16 for even i and fp32
    for odd i, so the measured models still cover both float kernels (the other precision
    where some float layer's choice lacks that one).
    """
    if not backend.one_float_precision:
        return [dict(s) for s in samples]
    kernel = {}  # quant option → the kernel class the backend runs for it
    for label, choice in space.items():
        if label.endswith(".quant"):
            for o in choice.options:
                kernel[o] = backend.kernel_map[kernel_of(QuantScheme.parse(o))]
    out = []
    for i, sample in enumerate(samples):
        floats = [k for k, v in sample.items() if kernel.get(v) in FLOAT_KERNELS]
        offered = [
            p
            for p in (FLOAT_KERNELS[i % 2], FLOAT_KERNELS[1 - i % 2])
            if all(any(kernel[o] == p for o in space[k].options) for k in floats)
        ]
        if not offered:
            raise ConfigError(
                f"space {space.name!r} has float layers with only fp16 and others with only "
                f"fp32, so backend {backend.name!r} (one float precision per model) cannot run "
                "any of its models end to end"
            )
        new = dict(sample)
        for k in floats:
            if kernel[new[k]] != offered[0]:
                new[k] = next(o for o in space[k].options if kernel[o] == offered[0])
        out.append(space.canonical(new))
    return out


def stratified_samples(
    space: SearchSpace, backend: Backend, cost: CostModel, n: int, seed: int = 0, pool: int = 20
) -> list[Sample]:
    """`n` random architectures, one drawn at random from each of `n` equal-probability
    strata of the table-sum latency of `pool`·n random draws (stratified random
    sampling): the space's own latency distribution, without the clumps of near-equal
    latencies that pure draws leave, which only the measurement noise would order."""
    if n < 1:
        return []
    cand = runnable_samples(space, backend, space.sample_many(pool * n, rng=seed))
    order = np.argsort(cost.costs(cand, ("table_ms",))["table_ms"], kind="stable")
    rng = np.random.default_rng(seed)
    return [cand[int(rng.choice(stratum))] for stratum in np.array_split(order, n)]


def searched_samples(
    space: SearchSpace,
    backend: Backend,
    cost: CostModel,
    n: int,
    seed: int = 0,
    pool: int = 400,
    quantiles: tuple[float, float] = (0.05, 0.75),
) -> list[Sample]:
    """`n` architectures as a latency-budgeted search picks them.

    For budget k (the table-sum latency at quantile q_k of a random pool, q spread evenly
    over `quantiles`), of `pool` fresh random samples under the budget the one with the
    most blocks (ties: the most MACs): depth is what a search buys when it must stay under
    a budget (the default experiment chose many blocks at narrow widths), and the
    budgets spread the set over the range searches are run at.
    """
    if n < 1:
        return []
    rng = np.random.default_rng(seed)
    ref = cost.costs(space.sample_many(2000, rng=int(rng.integers(2**31))), ("table_ms",))
    budgets = np.quantile(ref["table_ms"], np.linspace(*quantiles, n))
    out: list[Sample] = []
    for budget in budgets:
        cand = runnable_samples(
            space, backend, space.sample_many(pool, rng=int(rng.integers(2**31)))
        )
        got = cost.costs(cand, ("table_ms", "macs"))
        blocks = np.array([len(space.freeze(c).blocks) for c in cand])
        ok = np.flatnonzero(got["table_ms"] <= budget)
        if not len(ok):  # a budget under every draw: the fastest draw
            ok = np.array([int(np.argmin(got["table_ms"]))])
        best = ok[np.lexsort((-got["macs"][ok], -blocks[ok]))[0]]
        out.append(cand[best])
    return out


def end_to_end_runner(
    entry: SpaceEntry, backend: Backend, spec: ArchSpec, batch: int
) -> Callable[[], Measurement]:
    """Convert one architecture's whole model for `backend`; each call times it again."""
    family = entry.family
    if family.standalone_model is None:
        raise ConfigError(
            f"family {family.name!r} cannot build standalone models for end-to-end runs"
        )
    module, inputs = family.standalone_model(entry.config, entry.space(), spec.sample_dict, batch)
    prefix = getattr(module, "PREFIX", "")  # a PositionalForward wrapper nests the model
    plan = {
        prefix + layer.path: backend.kernel_map[kernel_of(layer.quant)] for layer in spec.layers
    }
    return backend.prepare(module, inputs, plan)


def time_end_to_end(
    entry: SpaceEntry,
    backend: Backend,
    specs: Sequence[ArchSpec],
    batch: int = 1,
    statistic: str = "min_ms",
    rounds: int = 3,
    progress: bool = False,
    known: Mapping[tuple[int, int], float] | None = None,
    record: Callable[[int, int, float], None] | None = None,
    timing: contextlib.AbstractContextManager | None = None,
) -> np.ndarray:
    """`statistic` (ms; use the table's) of every architecture's whole model in each of
    `rounds` interleaved rounds over all of them: (rounds, len(specs)).

    `timing`: entered after every conversion and around the rounds alone (pinning to a
    core, `latency_tables.quiet.one_core`; a lock that keeps other timing jobs out).

    Resumable: `known` holds (architecture index, round) → ms already measured, which are
    not measured again (an architecture with every round known is not even converted);
    `record(i, round, ms)` is called after each new measurement, to store it durably.

    On a shared machine a slow spell lasts seconds (seen here: one model's median at 8, 13
    and 12 ms in three rounds); interleaving makes a spell hit one round of several models
    instead of every round of one. Load only ever adds time, so a model's best round
    (``.min(0)``) is its own cost. Every model is converted once, before the first round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    known = known or {}
    todo = [i for i in range(len(specs)) if any((i, r) not in known for r in range(rounds))]
    runners = {
        i: end_to_end_runner(entry, backend, specs[i], batch)
        for i in tqdm(todo, desc="converting", unit="arch", disable=not progress)
    }
    times = np.empty((rounds, len(specs)))
    with (
        timing if timing is not None else contextlib.nullcontext(),
        tqdm(
            total=rounds * len(specs), desc="end-to-end rounds", unit="run", disable=not progress
        ) as bar,
    ):
        for r in range(rounds):
            for i in range(len(specs)):
                if (i, r) in known:
                    times[r, i] = known[(i, r)]
                else:
                    times[r, i] = getattr(runners[i](), statistic)
                    if record is not None:
                        record(i, r, float(times[r, i]))
                bar.update()
    return times


def repeatability(times: np.ndarray) -> float | None:
    """Kendall τ between the best of the even and the best of the odd rounds: how well the
    end-to-end measurement ranks the architectures against itself (None below 2 rounds)."""
    from scipy import stats

    if len(times) < 2:
        return None
    return float(stats.kendalltau(times[0::2].min(0), times[1::2].min(0)).statistic)


def _set_report(
    times: np.ndarray, predicted: np.ndarray, corrected: np.ndarray, corrected_name: str
) -> dict[str, Any]:
    measured = times.min(0)
    return {
        "n": len(measured),
        "repeatability_tau": repeatability(times),
        "raw": metrics(predicted, measured),
        corrected_name: metrics(corrected, measured),
    }


def validate(
    entry: SpaceEntry,
    backend: Backend,
    cost: CostModel,
    n: int = 30,
    seed: int = 0,
    batch: int = 1,
    out_dir: str | Path | None = None,
    progress: bool = True,
    rounds: int = 5,
    n_searched: int = 10,
    features: Sequence[str] = DEFAULT_FEATURES,
    core: int | None = -1,
    stratified: bool = True,
    lock: str | Path | None = None,
    nonneg_intercept: bool = NONNEG_INTERCEPT,
) -> dict[str, Any]:
    """Measure `n` random (`stratified`: by `stratified_samples`, else plain draws) and
    `n_searched` searched architectures end to end (`rounds`
    interleaved rounds over all of them, each keeping its best; the table's statistic;
    on one core, `latency_tables.quiet.one_core(core)`, unless `core` is None; holding
    `lock` (a file other timing jobs `flock` too) while timing, not while converting),
    compare with the table, and fit the residual model on the random ones (`assess`).
    """
    space = entry.space()
    table_host = cost.table.meta.get("fingerprint")  # type: ignore[union-attr]
    if table_host is not None and table_host != backend.fingerprint():
        log.warning(
            "table %s was measured on %s, not on this device (%s): its sums carry the other "
            "device's speeds; rebuild it here with `nas latency build` to validate it",
            cost.table.csv_path,  # type: ignore[union-attr]
            table_host,
            backend.fingerprint(),
        )
    if stratified:
        samples = stratified_samples(space, backend, cost, n, seed=seed)
    else:
        samples = runnable_samples(space, backend, space.sample_many(n, rng=seed))
    samples += searched_samples(space, backend, cost, n_searched, seed=seed + 1)
    specs = [space.freeze(s) for s in samples]
    statistic = cost.table.statistic  # type: ignore[union-attr]  (predict needs the table)
    load_before, t0 = list(os.getloadavg()), time.perf_counter()
    times = time_end_to_end(
        entry, backend, specs, batch, statistic, rounds, progress, timing=timing_context(lock, core)
    )
    seconds = round(time.perf_counter() - t0, 1)
    report = assess(
        cost,
        specs,
        n,
        times,
        features,
        nonneg_intercept,
        provenance={
            "table_fingerprint_matches": table_host == backend.fingerprint(),
            "stratified": stratified,
            "seed": seed,
            "statistic": statistic,
            "core": core,
            # converting and timing; the host's load averages (1, 5, 15 min) around them
            "end_to_end_seconds": seconds,
            "load_average": {"before": load_before, "after": list(os.getloadavg())},
        },
    )
    if out_dir is not None:
        report["files"] = save_report(report, out_dir, backend.name)
    return report


def assess(
    cost: CostModel,
    specs: Sequence[ArchSpec],
    n: int,
    times: np.ndarray,
    features: Sequence[str] = DEFAULT_FEATURES,
    nonneg_intercept: bool = NONNEG_INTERCEPT,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare the table with end-to-end `times` (rounds, archs) of `specs`, whose first `n`
    are the random set and the rest the searched one, and fit the residual model of
    `latency_tables.calibration` on the random set.

    Report: ``random`` (raw, calibrated leave-one-out) and ``searched`` (raw, calibrated
    by the fit on every random architecture), each with its repeatability τ; ``raw`` and
    ``calibrated_loo`` at the top are the random set's; ``calibration`` the fitted model;
    ``archs`` every architecture with its sample, every round and every residual feature.
    """
    space = cost.space
    sets = ["random"] * n + ["searched"] * (len(specs) - n)
    # the raw table sum (a calibrated CostModel is refitted from scratch)
    predicted = cost.costs(specs, ("table_ms",))["table_ms"]
    names = tuple(features)
    every = cost.features(specs, tuple(FEATURES))  # all of them, for ablations
    feats = every[:, [list(FEATURES).index(f) for f in names]]
    measured = times.min(0)
    r = slice(0, n)
    info = {
        "table": str(cost.table.csv_path),  # type: ignore[union-attr]
        "space": space.name,
        "archs": "random",
        **{k: v for k, v in (provenance or {}).items() if k == "seed"},
    }
    fit = {"nonneg_intercept": nonneg_intercept}
    cal = Calibration.fit(predicted[r], feats[r], measured[r], names, info=info, **fit)
    corrected = np.empty(len(specs))
    corrected[r] = loo_calibrated(predicted[r], feats[r], measured[r], names, **fit)
    corrected[n:] = cal.apply(predicted[n:], feats[n:])
    rand = _set_report(times[:, r], predicted[r], corrected[r], "calibrated_loo")
    report = {
        "space": space.name,
        **dict(provenance or {}),
        "n": n,
        "n_searched": len(specs) - n,
        "rounds": len(times),
        "nonneg_intercept": nonneg_intercept,
        "repeatability_tau": rand["repeatability_tau"],
        "raw": rand["raw"],
        "calibrated_loo": rand["calibrated_loo"],
        "random": rand,
        "calibration": cal.to_json(),
        "archs": [
            {
                "set": kind,
                "hash": s.hash,
                "sample": s.sample_dict,
                "blocks": len(s.blocks),
                "predicted_ms": float(p),
                "calibrated_ms": float(c),
                "measured_ms": float(m),
                "rounds_ms": [float(t) for t in ts],  # every round, in order (best: measured)
                **{f: float(v) for f, v in zip(FEATURES, fv)},
            }
            for kind, s, p, c, m, ts, fv in zip(
                sets, specs, predicted, corrected, measured, times.T, every
            )
        ],
    }
    if len(specs) > n:
        s_ = slice(n, None)
        report["searched"] = _set_report(times[:, s_], predicted[s_], corrected[s_], "calibrated")
    return report


def save_report(report: Mapping[str, Any], out_dir: str | Path, backend: str) -> list[str]:
    """Save a report's calibration, the report and a scatter plot beside the table in
    `out_dir` (what the pipeline and `refit` read); returns their paths."""
    out = Path(out_dir)
    space = report["space"]
    stem = f"{backend}.{space}"
    write_json(calibration_path(out / f"{backend}.csv", space), report["calibration"])
    write_json(out / f"{stem}.validation.json", report)
    archs = report["archs"]
    col = lambda k: np.array([a[k] for a in archs])
    scatter(
        col("predicted_ms"),
        col("calibrated_ms"),
        col("measured_ms"),
        out / f"{stem}.validation.png",
        title=f"{space} on {out.name}/{backend}",
        searched=col("set") == "searched",
    )
    return [
        str(out / f"{stem}.{x}") for x in ("calibration.json", "validation.json", "validation.png")
    ]


def refit(
    cost: CostModel,
    backend: str,
    features: Sequence[str] = DEFAULT_FEATURES,
    nonneg_intercept: bool = NONNEG_INTERCEPT,
) -> dict[str, Any]:
    """`assess` again, from the end-to-end rounds a `validate` run recorded beside the
    cost model's table (its ``validation.json``), without timing anything: another residual
    model on the same measurements. Saves, as `validate` does."""
    table = cost.table
    if table is None:
        raise ConfigError(
            "refit needs a CostModel built on a latency table: CostModel(space, LatencyTable.load(...))"
        )
    path = table.csv_path.with_name(f"{backend}.{cost.space.name}.validation.json")
    if not path.exists():
        raise ConfigError(
            f"no recorded validation at {path}; measure one with `nas latency validate "
            f"--space {cost.space.name} --backend {backend} --device {table.meta.get('device')}`"
        )
    old = read_json(path)
    archs = old.get("archs", [])
    if not archs or any("rounds_ms" not in a for a in archs):
        raise ConfigError(
            f"{path} has no per-round times (recorded before they were kept); measure again "
            f"with `nas latency validate --space {cost.space.name} --backend {backend}`"
        )
    specs = [cost.space.freeze(a["sample"]) for a in archs]
    times = np.array([a["rounds_ms"] for a in archs]).T
    keep = (
        "table_fingerprint_matches",
        "stratified",
        "seed",
        "statistic",
        "core",
        "end_to_end_seconds",
        "load_average",
    )
    report = assess(
        cost,
        specs,
        int(old["n"]),
        times,
        features,
        nonneg_intercept,
        provenance={k: old[k] for k in keep if k in old} | {"refit_of": str(path)},
    )
    report["files"] = save_report(report, table.csv_path.parent, backend)
    return report


def validate_table(
    entry: SpaceEntry,
    backend: Backend,
    cost: CostModel,
    *,
    n: int,
    seed: int,
    rounds: int,
    n_searched: int = 10,
    features: Sequence[str] = DEFAULT_FEATURES,
    core: int | None = -1,
    stratified: bool = True,
    lock: str | Path | None = None,
    progress: bool = True,
    nonneg_intercept: bool = NONNEG_INTERCEPT,
) -> dict[str, Any]:
    """`validate` against the cost model's own table: its batch, and the calibration,
    report and scatter saved beside its CSV (what `nas latency validate` does)."""
    table = cost.table
    if table is None:
        raise ValueError("validate_table needs a CostModel built on a latency table")
    return validate(
        entry,
        backend,
        cost,
        n=n,
        seed=seed,
        batch=table.meta.get("batch", 1),
        out_dir=table.csv_path.parent,
        progress=progress,
        rounds=rounds,
        n_searched=n_searched,
        features=features,
        core=core,
        stratified=stratified,
        lock=lock,
        nonneg_intercept=nonneg_intercept,
    )


def scatter(
    predicted: np.ndarray,
    calibrated: np.ndarray,
    measured: np.ndarray,
    path: Path,
    title: str,
    searched: np.ndarray | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    lo, hi = (
        float(min(measured.min(), predicted.min())),
        float(max(measured.max(), predicted.max())),
    )
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
    rand = np.ones(len(measured), bool) if searched is None else ~searched
    ax.scatter(measured[rand], predicted[rand], s=14, label="table sum, random")
    ax.scatter(measured[rand], calibrated[rand], s=14, marker="x", label="calibrated, random (LOO)")
    if searched is not None and searched.any():
        ax.scatter(measured[searched], predicted[searched], s=14, label="table sum, searched")
        ax.scatter(
            measured[searched], calibrated[searched], s=18, marker="+", label="calibrated, searched"
        )
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
