"""How well the shipped table predicts end-to-end latency on this host.

Measures ≥ 30 random and ≥ 10 searched architectures of the default U-Net space
(`latency_tables.validate.searched_samples`: at budgets spread over the random range,
the deepest draw, as budgeted searches pick) end to end with the table's own backend
and settings, all in the same interleaved rounds (each keeping its best round), on one
core at a raised priority (`latency_tables.quiet`), and compares each set with the
table: share within ±10%, MAPE, Kendall τ of the raw table sum and of the residual
model (`latency_tables.calibration`) fitted on the random set only — leave-one-out on
the random set, as fitted on the searched set. Beside them, each set's repeatability
τ (the measurement against itself: best of even vs odd rounds). Also reports the number
of keys, the recorded wall time of the full table build, and the throughput of
`CostModel.predict` with the calibration folded in. Prints JSON (and writes it with
``--out``); saves the fitted calibration (which `nas search` then predicts with), the
report and a scatter plot next to the table, as `nas latency validate` does.

    .venv/bin/python bench/latency_accuracy.py [--n 30] [--searched 10] [--rounds 10]
        [--lock /tmp/mqnas-timing.lock] [--out bench/results/latency_accuracy_onnxruntime.json]

(it converts every model first, then takes the `--lock` flock for the timing rounds only).
``--refit`` times nothing: it fits the residual model again on the end-to-end rounds the
last run recorded beside the table (`latency_tables.validate.refit`), e.g. after a change
of its features (``--features``) or of ``--nonneg-intercept``; the JSON says so
(``refit_of``) and keeps that run's load averages.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from record import publish

import search_spaces  # noqa: F401
from latency_tables.backends import BACKENDS
from latency_tables.calibration import Calibration, loo_calibrated
from latency_tables.cost import CostModel
from latency_tables.residual import DEFAULT_FEATURES, NONNEG_INTERCEPT
from latency_tables.structure import SpaceStructure
from latency_tables.table import DATA_ROOT, LatencyTable
from latency_tables.validate import metrics, refit, validate_table
from nas import SPACES

ABLATION = (
    (),
    ("blocks",),
    ("layers",),
    ("weight_mb",),
    ("act_mb",),
    ("weight_mb", "act_mb"),
    ("act_mb", "layers"),
    ("weight_mb", "act_mb", "layers"),
    ("weight_mb", "act_mb", "blocks"),
    ("weight_mb", "act_mb", "layers", "blocks"),
)


def ablation(archs: list[dict]) -> dict[str, dict]:
    """Each candidate feature set of the residual model, with a free intercept and with
    one held at ≥ 0 (``c>=0``), fitted on the random set as `validate` fits the default
    one: random leave-one-out and searched figures."""
    out = {}
    for names in ABLATION:
        for nonneg in (False, True):
            key = "+".join(names) or "scale+intercept"
            out[key + (" c>=0" if nonneg else "")] = _ablate(archs, names, nonneg)
    return out


def _ablate(archs: list[dict], names: tuple[str, ...], nonneg: bool) -> dict:
    def cols(xs: list[dict]) -> tuple:
        return (
            np.array([a["predicted_ms"] for a in xs]),
            np.array([[a[f] for f in names] for a in xs]).reshape(len(xs), len(names)),
            np.array([a["measured_ms"] for a in xs]),
        )

    p, f, m = cols([a for a in archs if a["set"] == "random"])
    row = {"random_loo": metrics(loo_calibrated(p, f, m, names, nonneg_intercept=nonneg), m)}
    srch = [a for a in archs if a["set"] == "searched"]
    if srch:
        cal = Calibration.fit(p, f, m, names, nonneg_intercept=nonneg)
        ps, fs, ms = cols(srch)
        row["searched"] = metrics(cal.apply(ps, fs), ms)
        row["fit"] = {"scale": cal.scale, **cal.weights, "intercept": cal.intercept}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobile_unet")
    ap.add_argument("--device", default="cpu-x86_64")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--tables", default=str(DATA_ROOT))
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--searched", type=int, default=10, help="searched (deep, narrow) archs")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved end-to-end rounds")
    ap.add_argument("--core", type=int, default=-1, help="the core timing is pinned to")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument(
        "--lock",
        default="/tmp/mqnas-timing.lock",
        help="flock held while timing (not while converting); '' for none",
    )
    ap.add_argument(
        "--features",
        nargs="+",
        default=list(DEFAULT_FEATURES),
        help="residual features of the calibration (latency_tables.residual.FEATURES)",
    )
    ap.add_argument(
        "--nonneg-intercept",
        action=argparse.BooleanOptionalAction,
        default=NONNEG_INTERCEPT,
        help="hold the calibration's intercept (a per-inference overhead) at >= 0",
    )
    ap.add_argument(
        "--refit",
        action="store_true",
        help="time nothing: refit on the rounds the last run recorded beside the table",
    )
    args = ap.parse_args()

    entry = SPACES.get(args.space)
    space = entry.space()
    t0 = time.perf_counter()
    structure = SpaceStructure(space)
    structure_s = time.perf_counter() - t0
    table = LatencyTable.load(args.tables, args.device, args.backend)
    cost = CostModel(space, table, structure=structure)

    s = table.meta["settings"]
    model = {"features": args.features, "nonneg_intercept": args.nonneg_intercept}
    if args.refit:
        report = refit(cost, args.backend, **model)
    else:
        backend = BACKENDS.get(args.backend)(
            threads=s["threads"], warmup=s["warmup"], runs=s["runs"]
        )
        # the shipped table's calibration, report and scatter, as `nas latency validate` saves
        sets = {"n": args.n, "n_searched": args.searched, "seed": args.seed, "rounds": args.rounds}
        lock = args.lock or None
        report = validate_table(entry, backend, cost, core=args.core, lock=lock, **sets, **model)

    # predict throughput with the fitted calibration folded in: from an option-index matrix
    # (the vectorized path), and from samples
    calibrated = CostModel(
        space, table, structure=structure, calibration=Calibration.from_json(report["calibration"])
    )
    idx = space.encode(space.sample_many(2000, rng=0), kind="index")
    big = np.repeat(idx, 50, axis=0)  # 1e5 samples
    t0 = time.perf_counter()
    calibrated.predict_index(big)
    per_s_index = len(big) / (time.perf_counter() - t0)
    samples = space.sample_many(5000, rng=1)
    t0 = time.perf_counter()
    calibrated.predict(samples)
    per_s_samples = len(samples) / (time.perf_counter() - t0)
    publish(
        {
            "bench": "latency_accuracy",
            "space": args.space,
            "table": str(table.csv_path),
            "backend": args.backend,
            "settings": s,
            "keys": len(structure.block_keys()),
            "keys_measured": len(table),
            "table_build_seconds": table.meta.get("build_seconds"),
            # interleaved timing rounds per key when the table was built (1: before rounds)
            "table_build_rounds": table.meta.get("build_rounds", 1),
            "structure_analysis_seconds": round(structure_s, 2),
            "n_archs": report["n"],
            "n_searched": report["n_searched"],
            "statistic": report["statistic"],
            "rounds": report["rounds"],
            "core": report["core"],
            # the host's load averages (1, 5, 15 min) before and after converting and timing
            "load_average_before": report["load_average"]["before"],
            "load_average_after": report["load_average"]["after"],
            "refit_of": report.get("refit_of"),
            "features": list(args.features),
            "nonneg_intercept": report["nonneg_intercept"],
            # per set: τ of the end-to-end measurement against itself (best of even vs
            # odd rounds), the ceiling any prediction can reach on this machine then;
            # raw table sum; calibrated (random: leave-one-out; searched: fitted on
            # the random set only)
            "random": report["random"],
            "searched": report.get("searched"),
            "calibration": report["calibration"],
            # other residual feature sets, fitted and checked the same way
            "ablation": ablation(report["archs"]),
            "table_fingerprint_matches": report["table_fingerprint_matches"],
            "goal": {"within_10pct": 0.95, "kendall_tau": 0.95, "sets": ["random", "searched"]},
            "predict_per_second_index": round(per_s_index),
            "predict_per_second_samples": round(per_s_samples),
            "end_to_end_seconds": report["end_to_end_seconds"],
            "files": report["files"],
            # per architecture (its sample is in the validation.json beside the table)
            "archs": [{k: v for k, v in a.items() if k != "sample"} for a in report["archs"]],
        },
        args.out,
        indent=2,
        quiet=("archs",),
    )


if __name__ == "__main__":
    main()
