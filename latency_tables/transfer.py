"""A new device's latency table from a few end-to-end measurements and other devices' tables.

Few-shot latency transfer (the setting of HELP, Lee et al., NeurIPS 2021, and MAPLE-Edge,
Nair et al., 2022: a handful of measured architectures on the new device plus complete
tables of other devices). Blocks of one kind on one kernel class speed up together from one
device to another (the same ops, the same memory pattern), so the model is a per-group
rescaling of each source table:

    m_i ≈ Σ_src Σ_g s_{src,g} · S_{src,g}(i) + Σ_k b_k · n_k(i) + c                 (1)

where S_{src,g}(i) is the source table's latency of architecture i summed over its keys of
group g (block kind × kernel class, each key weighted by its MAC share as in
`latency_tables.keys`), s ≥ 0 the group's scale, n_k(i) the number of blocks of kind k and
b_k ≥ 0 a per-block cost of the new runtime the source has not (op dispatch, a delegate's
invoke per partition: it makes many narrow blocks dearer there than their size says), and
c ≥ 0 a per-inference overhead (invoke, input/output copies) that no block owns. With 5–20
measurements there are more groups than the data can pin down, so each scale is shrunk
toward its source's common scale a_src (a hierarchical / partial-pooling prior) and the
per-block costs toward zero:

    min_{s, a, b, c ≥ 0}  Σ_i ((m_i − ŷ_i) / m̄)²  +  λ Σ_{src,g} (s_{src,g} − a_src)²
                                                   +  μ Σ_k (b_k · n̄ / m̄)²                (2)

(n̄ the mean number of blocks) solved as one non-negative least squares (the penalties as
extra rows) with λ and μ chosen by leave-one-out relative error; μ = ∞ leaves b out. Large
λ is one scale per source table; small λ lets each group move. The adapted table holds
every source key rescaled by its group's scale plus its kind's b_k (every block costs
exactly one key-weight of its kind, so the sum adds b_k once per block), and c as the
table's ``overhead_ms``; its meta records the sources, the scales, b, λ, μ and the
leave-one-out figures (`nas latency adapt`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
#: μ of eq. (2) tried by leave-one-out; ∞: no per-block costs.
MUS = (1e-2, 1.0, 1e2, float("inf"))


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


def kind_counts(specs: Sequence[ArchSpec]) -> dict[str, np.ndarray]:
    """n_k(i) of eq. (1): block kind → (len(specs),) blocks of that kind per architecture."""
    out: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        for block in spec.blocks:
            out.setdefault(block.kind, np.zeros(len(specs)))[i] += 1
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
    per_block_ms: dict[str, float] = field(default_factory=dict)  # kind → b_k
    mu: float = float("inf")

    def scale(self, source: str, group: str) -> float:
        """A group's scale; a group the fit never saw takes its source's common scale."""
        return self.scales[source].get(group, self.base_scale[source])

    def predict(
        self,
        sums: Mapping[str, Mapping[str, np.ndarray]],
        counts: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """ŷ of eq. (1) from `group_sums` per source and `block_counts` per kind."""
        total = None
        for src in self.sources:
            for g, s in sums[src].items():
                part = self.scale(src, g) * np.asarray(s)
                total = part if total is None else total + part
        if total is None:
            raise ValueError("no group sums to predict from")
        if any(self.per_block_ms.values()):
            if counts is None:
                raise ValueError("this model has per-block costs: pass the block counts")
            for kind, b in self.per_block_ms.items():
                total = total + b * np.asarray(counts.get(kind, 0.0))
        return total + self.overhead_ms

    def to_json(self) -> dict[str, Any]:
        # μ = ∞ (no per-block costs) as null: JSON has no infinity
        mu = self.mu if np.isfinite(self.mu) else None
        return {**asdict(self), "sources": list(self.sources), "mu": mu}


def _design(
    sums: Sequence[Mapping[str, np.ndarray]],
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Columns (source index, group) and the (N, columns) matrix of eq. (1) without c."""
    cols = [(j, g) for j, s in enumerate(sums) for g in s]
    x = np.column_stack([sums[j][g] for j, g in cols])
    return cols, x


def _solve(
    x: np.ndarray,
    xb: np.ndarray,
    y: np.ndarray,
    owner: np.ndarray,
    n_src: int,
    lam: float,
    mu: float,
) -> np.ndarray:
    """Eq. (2) as one NNLS: unknowns [s (columns), b (kinds), a (sources), c]; y, x and xb
    already in units of m̄ (xb also per n̄ blocks). μ = ∞ fixes b = 0."""
    from scipy.optimize import nnls

    if not np.isfinite(mu):
        xb = xb[:, :0]
    n, k = x.shape
    q = xb.shape[1]
    width = k + q + n_src + 1
    data = np.hstack([x, xb, np.zeros((n, n_src)), np.ones((n, 1))])
    pen = np.zeros((k + q, width))
    pen[np.arange(k), np.arange(k)] = np.sqrt(lam)
    pen[np.arange(k), k + q + owner] = -np.sqrt(lam)
    pen[k + np.arange(q), k + np.arange(q)] = np.sqrt(mu) if q else 0.0
    a = np.vstack([data, pen])
    b = np.concatenate([y, np.zeros(k + q)])
    return nnls(a, b, maxiter=50 * width)[0]


def fit_transfer(
    sources: Sequence[str],
    sums: Sequence[Mapping[str, np.ndarray]],
    measured: np.ndarray,
    counts: Mapping[str, np.ndarray] | None = None,
    lambdas: Sequence[float] = LAMBDAS,
    mus: Sequence[float] = MUS,
) -> tuple[TransferModel, np.ndarray]:
    """Fit eq. (2), λ and μ by leave-one-out; returns the model (fitted on all) and the
    leave-one-out predictions at the chosen λ, μ (each made without its own architecture).
    Without `counts` (kind → blocks of that kind per architecture) there are no b_k."""
    measured = np.asarray(measured, dtype=float)
    n = len(measured)
    if n < 3:
        raise ConfigError(f"a transfer needs at least 3 measured architectures, got {n}")
    if len(sources) != len(sums):
        raise ValueError("one group-sum mapping per source")
    cols, x = _design(sums)
    owner = np.array([j for j, _ in cols])
    # kinds whose count never varies here are absorbed by c
    kinds = [k for k, v in (counts or {}).items() if np.ptp(np.asarray(v, dtype=float)) > 0]
    nb = np.column_stack([counts[k] for k in kinds]) if kinds else np.zeros((n, 0))
    if not kinds:
        mus = (float("inf"),)
    unit = float(measured.mean())  # eq. (2) is in units of the mean latency
    per = max(float(nb.sum(1).mean()), 1.0) if kinds else 1.0  # … and of n̄ blocks
    xs, xbs, ys = x / unit, nb / per, measured / unit
    best: tuple[float, float, float, np.ndarray] | None = None
    for mu in mus:
        for lam in lambdas:
            loo = np.empty(n)
            for i in range(n):
                keep = np.arange(n) != i
                w = _solve(xs[keep], xbs[keep], ys[keep], owner, len(sources), lam, mu)
                q = len(kinds) if np.isfinite(mu) else 0
                loo[i] = xs[i] @ w[: len(cols)] + xbs[i, :q] @ w[len(cols) : len(cols) + q]
                loo[i] = (loo[i] + w[-1]) * unit
            err = float(np.mean(np.abs(loo - measured) / measured))
            if best is None or err < best[0] - 1e-12:
                best = (err, lam, mu, loo)
    assert best is not None
    _, lam, mu, loo = best
    w = _solve(xs, xbs, ys, owner, len(sources), lam, mu)
    q = len(kinds) if np.isfinite(mu) else 0
    scales: dict[str, dict[str, float]] = {s: {} for s in sources}
    for (j, g), v in zip(cols, w[: len(cols)]):
        scales[sources[j]][g] = float(v)
    per_block = {k: float(v * unit / per) for k, v in zip(kinds[:q], w[len(cols) : len(cols) + q])}
    base = {s: float(w[len(cols) + q + j]) for j, s in enumerate(sources)}
    model = TransferModel(
        tuple(sources), base, scales, float(w[-1] * unit), float(lam), n, per_block, float(mu)
    )
    return model, loo


def adapted_entries(model: TransferModel, tables: Sequence[LatencyTable]) -> list[Entry]:
    """Every key all source tables hold, its statistics rescaled by eq. (1) plus its kind's
    per-block cost (no c: that is per inference, the table's ``overhead_ms``)."""
    common = set(tables[0].ok())
    for t in tables[1:]:
        common &= set(t.ok())
    out = []
    for key_id in sorted(common):
        parts = [(t.get(key_id), src) for t, src in zip(tables, model.sources)]
        key = parts[0][0].key
        g = group_of(key.kind, key.kernel)
        stats = {}
        b = model.per_block_ms.get(key.kind, 0.0)  # a location statistic moves, std does not
        for f in ("mean_ms", "median_ms", "std_ms", "min_ms"):
            stats[f] = sum(model.scale(src, g) * getattr(e.measurement, f) for e, src in parts)
            stats[f] += b if f != "std_ms" else 0.0
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
