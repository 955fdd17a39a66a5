"""A new device's latency table from a few end-to-end measurements and other devices' tables.

Few-shot latency transfer (the setting of HELP, Lee et al., NeurIPS 2021, and MAPLE-Edge,
Nair et al., 2022: a handful of measured architectures on the new device plus complete
tables of other devices). Blocks of one kind on one kernel class speed up together from one
device to another (the same ops, the same memory pattern), so the model is a per-group
rescaling of each source table:

    m_i ≈ Σ_src Σ_g s_{src,g} · S_{src,g}(i) + c                                    (1)

where S_{src,g}(i) is the source table's latency of architecture i summed over its keys of
group g (block kind × kernel class, each key weighted by its MAC share as in
`latency_tables.keys`), s ≥ 0 the group's scale and c ≥ 0 a per-inference overhead of the new
runtime (invoke, input/output copies) that no block owns. With 5–20 measurements there are
more groups than the data can pin down, so each scale is shrunk toward its source's common
scale a_src (a hierarchical / partial-pooling prior):

    min_{s, a, c ≥ 0}  Σ_i ((m_i − ŷ_i) / m̄)²  +  λ Σ_{src,g} (s_{src,g} − a_src)²        (2)

solved as one non-negative least squares (the penalty as extra rows) with λ chosen by
leave-one-out relative error. Large λ is one scale per source table; small λ lets each group
move. The adapted table holds every source key rescaled by its group's scale, and c as the
table's ``overhead_ms``; its meta records the sources, the scales, λ and the leave-one-out
figures (`nas latency adapt`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.keys import keys_of
from latency_tables.measurement import Measurement
from latency_tables.table import Entry, LatencyTable
from nas.errors import ConfigError, MissingLatencyEntryError
from nas.io import append_durably
from nas.spec import ArchSpec

log = logging.getLogger(__name__)

#: λ of eq. (2) tried by leave-one-out; the last is one common scale per source in effect.
LAMBDAS = tuple(float(v) for v in np.logspace(-4, 2, 13)) + (1e4,)


def group_of(kind: str, kernel: str) -> str:
    return f"{kind}@{kernel}"


def group_sums(specs: Sequence[ArchSpec], table: LatencyTable) -> dict[str, np.ndarray]:
    """S_g(i) of eq. (1): group → (len(specs),) source-table latency of each architecture's
    keys of that group. A key the table lacks is a `MissingLatencyEntryError`."""
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for i, spec in enumerate(specs):
        for key, share in keys_of(spec):
            if key not in table:
                missing.append(key.id)
                continue
            g = group_of(key.kind, key.kernel)
            out.setdefault(g, np.zeros(len(specs)))[i] += share * table.latency_ms(key)
    if missing:
        raise MissingLatencyEntryError(table.missing_message(sorted(set(missing))))
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class TransferModel:
    """Eq. (1) fitted: per source (``device/backend``) its common scale and per-group scales,
    the overhead c (ms), λ and the number of architectures it was fitted on."""

    sources: tuple[str, ...]
    base_scale: dict[str, float]
    scales: dict[str, dict[str, float]]  # source → group → s
    overhead_ms: float
    lam: float
    n_fit: int

    def scale(self, source: str, group: str) -> float:
        """A group's scale; a group the fit never saw takes its source's common scale."""
        return self.scales[source].get(group, self.base_scale[source])

    def predict(self, sums: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
        """ŷ of eq. (1) from `group_sums` per source."""
        total = None
        for src in self.sources:
            for g, s in sums[src].items():
                part = self.scale(src, g) * np.asarray(s)
                total = part if total is None else total + part
        if total is None:
            raise ValueError("no group sums to predict from")
        return total + self.overhead_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources)}


def _design(
    sums: Sequence[Mapping[str, np.ndarray]],
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Columns (source index, group) and the (N, columns) matrix of eq. (1) without c."""
    cols = [(j, g) for j, s in enumerate(sums) for g in s]
    x = np.column_stack([sums[j][g] for j, g in cols])
    return cols, x


def _solve(x: np.ndarray, y: np.ndarray, owner: np.ndarray, n_src: int, lam: float) -> np.ndarray:
    """Eq. (2) as one NNLS: unknowns [s (columns), a (sources), c]; y and x already / m̄."""
    from scipy.optimize import nnls

    n, k = x.shape
    data = np.hstack([x, np.zeros((n, n_src)), np.ones((n, 1))])
    pen = np.zeros((k, k + n_src + 1))
    pen[np.arange(k), np.arange(k)] = 1.0
    pen[np.arange(k), k + owner] = -1.0
    a = np.vstack([data, np.sqrt(lam) * pen])
    b = np.concatenate([y, np.zeros(k)])
    return nnls(a, b, maxiter=50 * a.shape[1])[0]


def fit_transfer(
    sources: Sequence[str],
    sums: Sequence[Mapping[str, np.ndarray]],
    measured: np.ndarray,
    lambdas: Sequence[float] = LAMBDAS,
) -> tuple[TransferModel, np.ndarray]:
    """Fit eq. (2), λ by leave-one-out; returns the model (fitted on all) and the
    leave-one-out predictions at the chosen λ (each made without its own architecture)."""
    measured = np.asarray(measured, dtype=float)
    n = len(measured)
    if n < 3:
        raise ConfigError(f"a transfer needs at least 3 measured architectures, got {n}")
    if len(sources) != len(sums):
        raise ValueError("one group-sum mapping per source")
    cols, x = _design(sums)
    owner = np.array([j for j, _ in cols])
    unit = float(measured.mean())  # eq. (2) is in units of the mean latency
    xs, ys = x / unit, measured / unit
    best: tuple[float, float, np.ndarray] | None = None
    for lam in lambdas:
        loo = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            w = _solve(xs[keep], ys[keep], owner, len(sources), lam)
            loo[i] = (xs[i] @ w[: len(cols)] + w[-1]) * unit
        err = float(np.mean(np.abs(loo - measured) / measured))
        if best is None or err < best[0] - 1e-12:
            best = (err, lam, loo)
    assert best is not None
    _, lam, loo = best
    w = _solve(xs, ys, owner, len(sources), lam)
    scales: dict[str, dict[str, float]] = {s: {} for s in sources}
    for (j, g), v in zip(cols, w[: len(cols)]):
        scales[sources[j]][g] = float(v)
    base = {s: float(w[len(cols) + j]) for j, s in enumerate(sources)}
    model = TransferModel(tuple(sources), base, scales, float(w[-1] * unit), float(lam), n)
    return model, loo


def adapted_entries(model: TransferModel, tables: Sequence[LatencyTable]) -> list[Entry]:
    """Every key all source tables hold, its statistics rescaled by eq. (1) (no c: that is
    per inference, the table's ``overhead_ms``)."""
    common = set(tables[0].ok())
    for t in tables[1:]:
        common &= set(t.ok())
    out = []
    for key_id in sorted(common):
        parts = [(t.get(key_id), src) for t, src in zip(tables, model.sources)]
        key = parts[0][0].key
        g = group_of(key.kind, key.kernel)
        stats = {}
        for f in ("mean_ms", "median_ms", "std_ms", "min_ms"):
            stats[f] = sum(model.scale(src, g) * getattr(e.measurement, f) for e, src in parts)
        n = min(e.measurement.n for e, _ in parts)  # type: ignore[union-attr]
        out.append(Entry(key, Measurement(n=n, **stats)))
    return out


# -- the end-to-end log of an adaptation: resumable per (architecture, round) ------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of an end-to-end log (a torn last line from a crash is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping a torn line (an interrupted write)", path)
    return out


def append_log(path: Path, record: Mapping[str, Any]) -> None:
    append_durably(path, (json.dumps(dict(record), separators=(",", ":")) + "\n").encode())
