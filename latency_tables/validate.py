"""Check a latency table against end-to-end measurements, and calibrate it.

`validate` samples architectures, measures each whole model with the table's
backend, and compares with the table's prediction: MAPE, share within ±5% /
±10%, Kendall τ and Spearman ρ. It then fits a calibration
(`latency_tables.calibration`) and reports the calibrated figures by
leave-one-out, so they are not measured on the data they were fitted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latency_tables.backends.base import Backend
from latency_tables.calibration import Calibration, block_counts, calibration_path
from latency_tables.cost import CostModel
from latency_tables.kernels import kernel_of
from latency_tables.measurement import Measurement
from nas.errors import ConfigError
from nas.io import write_json
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


def loo_calibrated(
    predicted: np.ndarray, counts: np.ndarray, measured: np.ndarray, kinds: Sequence[str]
) -> np.ndarray:
    """Leave-one-out calibrated predictions (each fitted without its own architecture)."""
    out = np.empty_like(measured)
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        cal = Calibration.fit(predicted[keep], counts[keep], measured[keep], kinds)
        out[i] = cal.apply(predicted[i : i + 1], counts[i : i + 1])[0]
    return out


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
) -> np.ndarray:
    """`statistic` (ms; use the table's) of every architecture's whole model in each of
    `rounds` interleaved rounds over all of them: (rounds, len(specs)).

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
    with tqdm(
        total=rounds * len(specs), desc="end-to-end rounds", unit="run", disable=not progress
    ) as bar:
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
) -> dict[str, Any]:
    """Measure `n` random architectures end to end (`rounds` interleaved rounds, the
    table's statistic) and compare with the table."""
    space = entry.space()
    samples = runnable_samples(space, backend, space.sample_many(n, rng=seed))
    specs = [space.freeze(s) for s in samples]
    kinds = sorted({b.kind for s in specs for b in s.blocks})
    counts = np.stack([block_counts(s, kinds) for s in specs])
    # the raw table sum (a calibrated CostModel is refitted from scratch)
    predicted = cost.costs(specs, ("table_ms",))["table_ms"]
    statistic = cost.table.statistic  # type: ignore[union-attr]  (predict needs the table)
    times = time_end_to_end(entry, backend, specs, batch, statistic, rounds, progress)
    measured = times.min(0)
    calibrated = loo_calibrated(predicted, counts, measured, kinds)
    cal = Calibration.fit(predicted, counts, measured, kinds)
    report = {
        "space": space.name,
        "n": n,
        "seed": seed,
        "statistic": statistic,
        "rounds": rounds,
        "repeatability_tau": repeatability(times),
        "raw": metrics(predicted, measured),
        "calibrated_loo": metrics(calibrated, measured),
        "calibration": cal.to_json(),
        "archs": [
            {
                "hash": s.hash,
                "predicted_ms": float(p),
                "calibrated_ms": float(c),
                "measured_ms": float(m),
            }
            for s, p, c, m in zip(specs, predicted, calibrated, measured)
        ],
    }
    if out_dir is not None:
        out = Path(out_dir)
        stem = f"{backend.name}.{space.name}"
        write_json(calibration_path(out / f"{backend.name}.csv", space.name), cal.to_json())
        write_json(out / f"{stem}.validation.json", report)
        scatter(
            predicted,
            calibrated,
            measured,
            out / f"{stem}.validation.png",
            title=f"{space.name} on {out.name}/{backend.name}",
        )
        report["files"] = [
            str(out / f"{stem}.{x}")
            for x in ("calibration.json", "validation.json", "validation.png")
        ]
    return report


def validate_table(
    entry: SpaceEntry,
    backend: Backend,
    cost: CostModel,
    *,
    n: int,
    seed: int,
    rounds: int,
    progress: bool = True,
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
    )


def scatter(
    predicted: np.ndarray, calibrated: np.ndarray, measured: np.ndarray, path: Path, title: str
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
    ax.scatter(measured, predicted, s=14, label="table sum")
    ax.scatter(measured, calibrated, s=14, marker="x", label="calibrated (leave-one-out)")
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
