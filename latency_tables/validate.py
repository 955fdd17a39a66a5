"""Check a latency table against end-to-end measurements, and calibrate it.

`validate` samples architectures, measures each whole model with the table's
backend, and compares with the table's prediction: MAPE, share within ±5% /
±10%, Kendall τ and Spearman ρ. It then fits a calibration — a residual model
over key-level features:

    measured ≈ a · predicted + Σ_kind b_kind · n_kind + c

(n_kind = blocks of each kind: the per-block glue a block-level table cannot
see, such as concatenations and reshapes between blocks), by ridge-regularised
least squares, and reports the calibrated figures by leave-one-out so they are
not measured on the data they were fitted on. The calibration is JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latency_tables.backends.base import Backend
from latency_tables.cost import CostModel
from latency_tables.kernels import kernel_of
from nas.errors import ConfigError
from nas.io import read_json, write_json
from nas.spec import ArchSpec
from nas.supernet import SpaceEntry

log = logging.getLogger(__name__)


def block_counts(spec: ArchSpec, kinds: Sequence[str]) -> np.ndarray:
    counts = dict.fromkeys(kinds, 0)
    for b in spec.blocks:
        if b.kind in counts:
            counts[b.kind] += 1
    return np.array([counts[k] for k in kinds], dtype=float)


@dataclass(frozen=True)
class Calibration:
    """measured ≈ scale · predicted + Σ per_block[kind] · n_kind + intercept (ms)."""

    scale: float
    per_block: dict[str, float]
    intercept: float
    n_fit: int

    def apply(self, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
        b = np.array(list(self.per_block.values()))
        return self.scale * np.asarray(predicted) + counts @ b + self.intercept

    def to_json(self) -> dict[str, Any]:
        return {"format": "mqnas-latency-calibration/1", **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        if d.get("format") != "mqnas-latency-calibration/1":
            raise ConfigError(f"not an mqnas latency calibration: format {d.get('format')!r}")
        return cls(
            float(d["scale"]),
            {k: float(v) for k, v in d["per_block"].items()},
            float(d["intercept"]),
            int(d["n_fit"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_json(read_json(path))

    @classmethod
    def fit(
        cls,
        predicted: np.ndarray,
        counts: np.ndarray,
        measured: np.ndarray,
        kinds: Sequence[str],
        ridge: float = 1e-2,
    ) -> Calibration:
        # Kinds whose count never varies here are absorbed by the intercept.
        varies = counts.std(0) > 0
        x = np.column_stack([predicted, counts[:, varies], np.ones(len(predicted))])
        # Ridge on the per-block terms only (standardised first), so that a handful of
        # architectures cannot buy a perfect fit with many block counts.
        sd = np.ones(x.shape[1])
        sd[1:-1] = counts[:, varies].std(0)
        xs = x / sd
        reg = np.diag([0.0] + [ridge * len(x)] * int(varies.sum()) + [0.0])
        w = np.linalg.lstsq(xs.T @ xs + reg, xs.T @ measured, rcond=None)[0] / sd
        per_block = dict.fromkeys(kinds, 0.0)
        per_block.update(zip([k for k, v in zip(kinds, varies) if v], map(float, w[1:-1])))
        return cls(float(w[0]), per_block, float(w[-1]), len(x))


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


def measure_end_to_end(
    entry: SpaceEntry, backend: Backend, spec: ArchSpec, batch: int, repeats: int = 3
) -> float:
    """End-to-end latency (ms) of one architecture on `backend`: the smallest of `repeats`
    medians. On a shared machine a whole timing window can be disturbed (seen here: the
    same model at 18 ms, then 14 and 13 ms); the converted model is cached by the backend,
    so repeats cost timing only."""
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
    return min(backend.measure(module, inputs, plan).median_ms for _ in range(repeats))


def validate(
    entry: SpaceEntry,
    backend: Backend,
    cost: CostModel,
    n: int = 30,
    seed: int = 0,
    batch: int = 1,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure `n` random architectures end to end and compare with the table."""
    space = entry.space()
    samples = space.sample_many(n, rng=seed)
    specs = [space.freeze(s) for s in samples]
    predicted = cost.predict(specs)
    kinds = sorted({b.kind for s in specs for b in s.blocks})
    counts = np.stack([block_counts(s, kinds) for s in specs])
    measured = np.array(
        [
            measure_end_to_end(entry, backend, s, batch)
            for s in tqdm(specs, desc="end-to-end", unit="arch", disable=not progress)
        ]
    )
    calibrated = loo_calibrated(predicted, counts, measured, kinds)
    cal = Calibration.fit(predicted, counts, measured, kinds)
    report = {
        "space": space.name,
        "n": n,
        "seed": seed,
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
        write_json(out / f"{stem}.calibration.json", cal.to_json())
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
