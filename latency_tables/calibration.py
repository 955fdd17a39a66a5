"""A table's calibration: the residual model of eq. (1) of `latency_tables.residual`, fitted end to end.

    measured ≈ a · T_table + Σ_f w_f · F_f + c

(F_f: residual features that scale with tensor sizes, such as the MB of weights the whole
model reloads and the MB of activations its layers move), fitted by `nas latency validate`
on random architectures by least squares on the *relative* error (each run weighted by
1 / measured, as the ±10% figures judge it), with a ridge on the standardised feature
terms only, and stored as JSON next to the table (`<backend>.<space>.calibration.json`).
`CostModel(calibration=...)` folds it into its cost tables, vectorized and in the
differentiable expectation alike.

Format 1 (a per-block-kind count model, a · T + Σ_kind b_kind · n_kind + c) is refused with
the command that refits it: block counts extrapolated badly to deep, narrow architectures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.residual import UNITS, check_features
from nas.errors import ConfigError
from nas.io import read_json

FORMAT = "mqnas-latency-calibration/2"
OLD_FORMATS = ("mqnas-latency-calibration/1",)


def calibration_path(table_csv: str | Path, space: str) -> Path:
    """Where `nas latency validate` saves the calibration of `space` on a table."""
    table_csv = Path(table_csv)
    return table_csv.with_name(f"{table_csv.stem}.{space}.calibration.json")


@dataclass(frozen=True)
class Calibration:
    """measured ≈ scale · predicted + Σ weights[f] · F_f + intercept (ms)."""

    scale: float
    weights: Mapping[str, float]
    intercept: float
    n_fit: int
    # where it came from (table, space, architectures) — provenance, not used to predict
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_features(list(self.weights))

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def apply(self, predicted: np.ndarray, features: np.ndarray) -> np.ndarray:
        """predicted (N,) table sums and features (N, F) in `self.features` order → ms."""
        w = np.array([self.weights[f] for f in self.features])
        x = np.asarray(features, dtype=float).reshape(len(np.atleast_1d(predicted)), len(w))
        return self.scale * np.asarray(predicted) + x @ w + self.intercept

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "scale": self.scale,
            "weights": dict(self.weights),
            "units": {f: UNITS[f] for f in self.weights},
            "intercept": self.intercept,
            "n_fit": self.n_fit,
            "info": dict(self.info),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "") -> Calibration:
        fmt = d.get("format") if isinstance(d, dict) else None
        at = f"{where}: " if where else ""
        if fmt in OLD_FORMATS:
            raise ConfigError(
                f"{at}calibration format {fmt!r} (per-block-kind counts) is no longer read; "
                f"this mqnas reads {FORMAT!r} (a residual model over tensor sizes). Refit it "
                "with `nas latency validate --space <space> --backend <backend> --device "
                "<device>`, or set latency.calibrated: false"
            )
        if fmt != FORMAT:
            raise ConfigError(f"{at}not an mqnas latency calibration: format {fmt!r}")
        try:
            return cls(
                float(d["scale"]),
                {str(k): float(v) for k, v in d["weights"].items()},
                float(d["intercept"]),
                int(d["n_fit"]),
                dict(d.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{at}corrupted calibration ({e!r}); refit it") from None

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_json(read_json(path), str(path))

    @classmethod
    def fit(
        cls,
        predicted: np.ndarray,
        features: np.ndarray,
        measured: np.ndarray,
        names: Sequence[str],
        ridge: float = 1e-2,
        info: Mapping[str, Any] | None = None,
        nonneg_intercept: bool = False,
    ) -> Calibration:
        """Least squares of the relative error, ridge `ridge` · N on the standardised
        feature terms (not on the scale or the intercept); a feature that never varies
        here gets weight 0 (the intercept absorbs it). `nonneg_intercept`: the intercept is
        a per-inference overhead, which cannot be negative: where the free fit's is, the
        model is refitted without one (c = 0)."""
        names = check_features(list(names))
        predicted = np.asarray(predicted, dtype=float)
        measured = np.asarray(measured, dtype=float)
        feats = np.asarray(features, dtype=float).reshape(len(predicted), len(names))
        varies = feats.std(0) > 1e-12 * (np.abs(feats).max(0) + 1e-300)
        w = _relative_lstsq(predicted, feats[:, varies], measured, ridge, intercept=True)
        if nonneg_intercept and w[-1] < 0:
            w = np.append(
                _relative_lstsq(predicted, feats[:, varies], measured, ridge, intercept=False), 0.0
            )
        weights = dict.fromkeys(names, 0.0)
        weights.update(zip([n for n, v in zip(names, varies) if v], map(float, w[1:-1])))
        return cls(float(w[0]), weights, float(w[-1]), len(predicted), dict(info or {}))


def _relative_lstsq(
    predicted: np.ndarray, feats: np.ndarray, measured: np.ndarray, ridge: float, intercept: bool
) -> np.ndarray:
    """[scale, feature weights…(, intercept)] minimising Σ ((x·w − m) / m)² plus the ridge
    on the standardised feature terms."""
    cols = [predicted[:, None], feats] + ([np.ones((len(predicted), 1))] if intercept else [])
    x = np.column_stack(cols)
    sd = np.ones(x.shape[1])
    sd[1 : 1 + feats.shape[1]] = feats.std(0)
    xs = x / sd / measured[:, None]  # rows weighted by 1 / measured: relative errors
    reg = np.zeros(x.shape[1])
    reg[1 : 1 + feats.shape[1]] = ridge * len(x)
    return (
        np.linalg.lstsq(xs.T @ xs + np.diag(reg), xs.T @ np.ones(len(measured)), rcond=None)[0] / sd
    )


def loo_calibrated(
    predicted: np.ndarray,
    features: np.ndarray,
    measured: np.ndarray,
    names: Sequence[str],
    ridge: float = 1e-2,
    nonneg_intercept: bool = False,
) -> np.ndarray:
    """Leave-one-out calibrated predictions (each fitted without its own architecture)."""
    out = np.empty(len(measured))
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        cal = Calibration.fit(
            predicted[keep],
            features[keep],
            measured[keep],
            names,
            ridge,
            nonneg_intercept=nonneg_intercept,
        )
        out[i] = cal.apply(predicted[i : i + 1], features[i : i + 1])[0]
    return out
