"""A table's calibration: a residual model over key-level features, fitted end to end.

    measured ≈ a · predicted + Σ_kind b_kind · n_kind + c

(n_kind = blocks of each kind: the per-block glue a block-level table cannot see,
such as concatenations and reshapes between blocks), fitted by ridge-regularised
least squares by `nas latency validate` and stored as JSON next to the table
(`<backend>.<space>.calibration.json`). `CostModel(calibration=...)` applies it,
vectorized and in the differentiable expectation alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.io import read_json
from nas.spec import ArchSpec


def calibration_path(table_csv: str | Path, space: str) -> Path:
    """Where `nas latency validate` saves the calibration of `space` on a table."""
    table_csv = Path(table_csv)
    return table_csv.with_name(f"{table_csv.stem}.{space}.calibration.json")


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
