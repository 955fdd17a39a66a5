"""Pareto fronts, hypervolume and the plots of a search.

Dominance (minimization form, y = sign · value with sign = -1 for "max"):
a dominates b iff a_i ≤ b_i for all i and a_j < b_j for some j (Deb 2001, def. 2.5).
The front is the set of non-dominated rows.

Hypervolume (Zitzler & Thiele 1998, the "S metric"): the Lebesgue measure of
the region dominated by the front and bounded by the reference point r,

    HV(Y, r) = λ( ∪_{y ∈ Y, y < r} [y_1, r_1] × … × [y_m, r_m] ).

Exact: in 2-D by a sweep over the front sorted on y_1 (staircase area,
Σ_k (y_1^{(k+1)} − y_1^{(k)}) · (r_2 − min_{j ≤ k} y_2^{(j)})); in 3-D by slicing
along y_3 (HSO, While et al. 2006: Σ_k (z_{k+1} − z_k) · HV_2D(points with y_3 ≤ z_k)).
More objectives are refused (use a Monte-Carlo estimate if you need them).

Plots are drawn on matplotlib's Agg canvas (`Figure` + `FigureCanvasAgg`, no
pyplot state), so they work headless and in notebooks alike; pandas and
matplotlib load only inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import ConfigError

log = logging.getLogger(__name__)

# name → (what, unit) for axis labels; other names fall back to suffix rules
UNITS: dict[str, tuple[str, str]] = {
    "latency_ms": ("latency", "ms"),
    "params": ("parameters", "count"),
    "macs": ("MACs", "count"),
    "bytes": ("model size", "bytes"),
    "val_loss": ("validation loss", "ε-MSE"),
    "evaluate_s": ("evaluation time", "s"),
}
_SUFFIX_UNITS = {"_ms": "ms", "_s": "s", "_mb": "MB", "_bytes": "bytes", "_pct": "%"}


# -- objectives and data ----------------------------------------------------------------------------
def _directions(objectives: Any) -> list[tuple[str, str]]:
    """(name, "min"|"max") pairs from a mapping, a list of names (min) or Objective-likes."""
    if isinstance(objectives, str):
        objectives = [objectives]
    items = objectives.items() if isinstance(objectives, Mapping) else objectives
    out: list[tuple[str, str]] = []
    for o in items:
        if isinstance(o, str):
            name, d = o, "min"
        elif hasattr(o, "name") and hasattr(o, "direction"):
            name, d = o.name, o.direction
        else:
            name, d = o
        if d not in ("min", "max"):
            raise ConfigError(f"objective {name!r}: direction {d!r} is unknown; use 'min' or 'max'")
        out.append((str(name), d))
    if not out:
        raise ConfigError("give at least one objective (name → 'min' | 'max')")
    return out


def _signs(dirs: list[tuple[str, str]]) -> np.ndarray:
    return np.array([1.0 if d == "min" else -1.0 for _, d in dirs])


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "loc")


def _matrix(data: Any, dirs: list[tuple[str, str]], completed_only: bool = True):
    """(Y (N, M) minimized, row positions kept) of a DataFrame or an (N, M) array.

    DataFrame: only `state == "completed"` rows when a state column exists; rows
    with a NaN objective are dropped either way. A frame with no completed row (empty, or
    only failed / pruned trials, which record no metrics) has no usable row even when
    its objective columns do not exist yet.
    """
    names = [n for n, _ in dirs]
    if _is_frame(data):
        missing = [n for n in names if n not in data.columns]
        if missing and not _has_completed(data):
            return np.empty((0, len(names))), np.empty(0, dtype=np.intp)
        if missing:
            raise ConfigError(
                f"objective column(s) {missing} are not in the trials; columns: "
                f"{[c for c in data.columns if not str(c).startswith('sample')]}"
            )
        vals = data[names].to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(vals).any(1)
        if completed_only and "state" in data.columns:
            ok &= (data["state"] == "completed").to_numpy()
    else:
        vals = np.asarray(data, dtype=np.float64)
        if vals.ndim == 1 and len(names) == 1:
            vals = vals[:, None]
        if vals.ndim != 2 or vals.shape[1] != len(names):
            raise ConfigError(
                f"an objective array must have shape (N, {len(names)}) for objectives {names}, "
                f"got {vals.shape}"
            )
        ok = ~np.isnan(vals).any(1)
    pos = np.flatnonzero(ok)
    return vals[pos] * _signs(dirs), pos


def _has_completed(df: Any) -> bool:
    """Whether a trials frame has a row that could carry objectives."""
    if len(df) == 0:
        return False
    return "state" not in df.columns or bool((df["state"] == "completed").any())


def nondominated_mask(y: np.ndarray, block: int = 1024) -> np.ndarray:
    """Rows of y (N, M) (minimized) that no other row dominates → bool (N,).

    Vectorized pairwise test in blocks of rows: memory O(block · N · M).
    Equal rows do not dominate each other (both are kept).
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    mask = np.ones(n, dtype=bool)
    for s in range(0, n, block):
        a = y[s : s + block]  # (B, M)
        weakly = (y[None, :, :] <= a[:, None, :]).all(-1)  # (B, N): row j ≤ a_i everywhere
        strictly = (y[None, :, :] < a[:, None, :]).any(-1)  # (B, N): and < somewhere
        mask[s : s + block] = ~(weakly & strictly).any(1)
    return mask


def pareto_front(df: Any, objectives: Any):
    """The non-dominated rows of `df` (completed, no NaN objective), best first objective first.

    objectives: ``{name: "min"|"max"}`` or a list of names (all minimized).
    Rows keep their index; the order is lexicographic on the (minimized) objectives.
    """
    dirs = _directions(objectives)
    y, pos = _matrix(df, dirs)
    keep = nondominated_mask(y)
    y, pos = y[keep], pos[keep]
    order = np.lexsort(y.T[::-1])  # first objective is the primary key
    return df.iloc[pos[order]]


# -- hypervolume ----------------------------------------------------------------------------------
def _hv2d(y: np.ndarray, r: np.ndarray) -> float:
    """Exact 2-D hypervolume of y (N, 2) (all strictly below r) by a sweep on y_1."""
    if len(y) == 0:
        return 0.0
    y = y[np.lexsort((y[:, 1], y[:, 0]))]
    best2 = np.minimum.accumulate(y[:, 1])  # (N,) the staircase height after each point
    right = np.append(y[1:, 0], r[0])  # (N,) where each step ends
    return float(np.sum((right - y[:, 0]) * (r[1] - best2)))


def _hv3d(y: np.ndarray, r: np.ndarray) -> float:
    """Exact 3-D hypervolume by slicing along y_3 (HSO): Σ slab depth · 2-D HV of the slice."""
    if len(y) == 0:
        return 0.0
    y = y[np.argsort(y[:, 2], kind="stable")]
    z = np.append(y[:, 2], r[2])
    total = 0.0
    for k in range(len(y)):
        depth = z[k + 1] - z[k]
        if depth > 0:
            pts = y[: k + 1, :2]
            total += depth * _hv2d(pts[nondominated_mask(pts)], r[:2])
    return total


def _hv(y: np.ndarray, r: np.ndarray) -> float:
    """Hypervolume of minimized points y (N, M) against minimized reference r (M,)."""
    y = y[(y < r).all(1)]  # only points strictly dominating r add volume
    if len(y) == 0:
        return 0.0
    y = y[nondominated_mask(y)]
    m = y.shape[1]
    if m == 1:
        return float(r[0] - y[:, 0].min())
    if m == 2:
        return _hv2d(y, r)
    return _hv3d(y, r)


def _ref(ref: Sequence[float], dirs: list[tuple[str, str]]) -> np.ndarray:
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    if len(r) != len(dirs):
        raise ConfigError(
            f"the reference point has {len(r)} values; give one per objective "
            f"{[n for n, _ in dirs]} (the worst acceptable value of each)"
        )
    if np.isnan(r).any():
        raise ConfigError(f"the reference point {list(r)} contains NaN")
    return r * _signs(dirs)


def _check_dims(dirs: list[tuple[str, str]]) -> None:
    if len(dirs) > 3:
        raise ConfigError(
            f"exact hypervolume is implemented for 1–3 objectives, got {len(dirs)} "
            f"({[n for n, _ in dirs]}); drop objectives or estimate it by Monte Carlo"
        )


def hypervolume(data: Any, objectives: Any, ref: Sequence[float]) -> float:
    """Exact hypervolume of the completed rows of a DataFrame (or an (N, M) array).

    ref: the reference point in the objectives' own units and order — the worst
    acceptable value of each (an upper bound for "min", a lower bound for "max").
    """
    dirs = _directions(objectives)
    _check_dims(dirs)
    y, _ = _matrix(data, dirs)
    return _hv(y, _ref(ref, dirs))


def hypervolume_curve(data: Any, objectives: Any, ref: Sequence[float]) -> np.ndarray:
    """Hypervolume after each evaluation (N,), in `created` order when the column exists.

    Failed, pruned or NaN rows count as evaluations that add nothing.
    """
    dirs = _directions(objectives)
    _check_dims(dirs)
    r = _ref(ref, dirs)
    if _is_frame(data):
        if "created" in data.columns:
            data = data.iloc[np.argsort(data["created"].to_numpy(), kind="stable")]
        n = len(data)
    else:
        n = len(np.asarray(data))
    y, pos = _matrix(data, dirs)
    valid = np.full(n, -1)
    valid[pos] = np.arange(len(pos))  # row → index into y, -1 when not usable
    out = np.zeros(n)
    front = np.empty((0, len(dirs)))
    hv = 0.0
    for i in range(n):
        j = valid[i]
        if j >= 0 and (y[j] < r).all() and not (front <= y[j]).all(1).any():
            # a new point that nothing on the front weakly dominates: it adds volume
            front = np.vstack([front, y[j]])
            front = front[nondominated_mask(front)]
            hv = _hv(front, r)
        out[i] = hv
    return out


# -- plots ------------------------------------------------------------------------------------------
def axis_label(name: str, direction: str | None = None, units: Mapping[str, str] | None = None):
    """``"latency [ms] (lower is better)"`` for an objective or metric name."""
    if units and name in units:
        what, unit = name, units[name]
    elif name in UNITS:
        what, unit = UNITS[name]
    else:
        what = name
        unit = next((u for s, u in _SUFFIX_UNITS.items() if name.endswith(s)), "a.u.")
    hint = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction or "", "")
    return f"{what} [{unit}]{hint}"


def _figure(w: float = 6.4, h: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no pyplot, no display needed
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | os.PathLike[str] | None) -> None:
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    log.info("wrote %s", p)


def plot_pareto(
    df: Any,
    objectives: Any,
    chosen: Any = None,
    path: str | os.PathLike[str] | None = None,
    units: Mapping[str, str] | None = None,
):
    """Scatter of two objectives: every trial grey, the front highlighted and stepped.

    chosen: a trial id (looked up in the ``id`` column), a row / mapping with the two
    objective values, or None. Returns the matplotlib Figure; writes a PNG to `path`.
    """
    dirs = _directions(objectives)
    if len(dirs) != 2:
        raise ConfigError(
            f"plot_pareto draws two objectives, got {[n for n, _ in dirs]}; pick two of them"
        )
    (xn, xd), (yn, yd) = dirs
    y_all, pos_all = _matrix(df, dirs, completed_only=False)
    pts = y_all * _signs(dirs)  # back to the objectives' own units, (N, 2)
    front = pareto_front(df, objectives)
    if len(front):
        f = front[[xn, yn]].to_numpy(dtype=np.float64)
        f = f[np.argsort(f[:, 0], kind="stable")]
    else:  # no completed trial: the objective columns may not even exist
        f = np.empty((0, 2))
    fig, ax = _figure()
    ax.scatter(pts[:, 0], pts[:, 1], s=14, c="0.7", label=f"trials ({len(pos_all)})")
    if len(f):
        # the attainment staircase: the corner both neighbours dominate (see module doc)
        ax.step(f[:, 0], f[:, 1], where="post" if xd == "min" else "pre", c="tab:blue", lw=1.2)
        ax.scatter(f[:, 0], f[:, 1], s=28, c="tab:blue", zorder=3, label=f"front ({len(f)})")
    point = _chosen_point(df, chosen, xn, yn)
    if point is not None:
        ax.scatter([point[0]], [point[1]], marker="*", s=220, c="tab:red", zorder=4, label="chosen")
        if isinstance(chosen, str):
            ax.annotate(chosen, point, textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(axis_label(xn, xd, units))
    ax.set_ylabel(axis_label(yn, yd, units))
    ax.set_title(f"Pareto front: {len(f)} of {len(pos_all)} trials")
    if len(f) == 0:
        n_rows = len(df) if _is_frame(df) else len(pts)
        ax.text(
            0.5,
            0.5,
            f"nothing to plot yet: no completed trial with both objectives ({n_rows} in all)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    return fig


def _chosen_point(df: Any, chosen: Any, xn: str, yn: str) -> tuple[float, float] | None:
    if chosen is None:
        return None
    if isinstance(chosen, str):
        if not _is_frame(df) or "id" not in df.columns:
            raise ConfigError("chosen is a trial id, but the trials have no 'id' column")
        rows = df[df["id"] == chosen]
        if len(rows) == 0:
            raise ConfigError(f"chosen trial {chosen!r} is not among the {len(df)} trials")
        row = rows.iloc[-1]
        return float(row[xn]), float(row[yn])
    if isinstance(chosen, (tuple, list)) and len(chosen) == 2:
        return float(chosen[0]), float(chosen[1])
    return float(chosen[xn]), float(chosen[yn])  # a row (pandas Series) or a mapping


def plot_hypervolume(
    curves: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    ylabel: str = "hypervolume [product of objective units]",
):
    """Hypervolume vs evaluations per strategy: the mean over seeds with a ±1 s.d. band.

    curves: name → one curve (N,) or a list of curves (one per seed; lengths may differ,
    shorter ones end early).
    """
    if not curves:
        raise ConfigError("plot_hypervolume needs at least one curve")
    fig, ax = _figure()
    n_seeds = []
    for name, c in curves.items():
        runs = [np.asarray(c, dtype=np.float64)] if np.ndim(c) == 1 else list(c)
        runs = [np.asarray(r, dtype=np.float64).reshape(-1) for r in runs]
        if not runs or max(len(r) for r in runs) == 0:
            raise ConfigError(f"hypervolume curve {name!r} is empty")
        length = max(len(r) for r in runs)
        mat = np.full((len(runs), length), np.nan)  # (seeds, evaluations)
        for i, r in enumerate(runs):
            mat[i, : len(r)] = r
        x = np.arange(1, length + 1)
        mean = np.nanmean(mat, 0)
        (line,) = ax.plot(x, mean, lw=1.5, label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            sd = np.nanstd(mat, 0)
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
        n_seeds.append(len(runs))
    ax.set_xlabel("evaluations [count]")
    ax.set_ylabel(ylabel)
    band = " (mean ± 1 s.d. over seeds)" if max(n_seeds) > 1 else ""
    ax.set_title(f"Hypervolume after each evaluation{band}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return fig


def plot_pred_vs_true(
    df: Any,
    pred: Any,
    true: Any,
    path: str | os.PathLike[str] | None = None,
    units: Mapping[str, str] | None = None,
):
    """Predicted vs true values with the y = x line and Kendall's τ in the title.

    pred, true: column names of `df` (or arrays of equal length).
    """
    from scipy.stats import kendalltau

    p, pn = _column(df, pred, "predicted")
    t, tn = _column(df, true, "true")
    if len(p) != len(t):
        raise ConfigError(f"pred has {len(p)} values and true {len(t)}; they must pair up")
    ok = np.isfinite(p) & np.isfinite(t)
    p, t = p[ok], t[ok]
    if len(p) < 2:
        raise ConfigError(f"plot_pred_vs_true needs ≥ 2 finite pairs, got {len(p)}")
    tau = float(kendalltau(t, p).statistic)
    fig, ax = _figure(5.2, 5.0)
    ax.scatter(t, p, s=16, c="tab:blue", alpha=0.8)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], c="0.4", ls="--", lw=1, label="y = x")
    ax.set_xlabel("true " + axis_label(tn, None, units))
    ax.set_ylabel(f"predicted ({pn}) " + axis_label(tn, None, units))  # same units as true
    ax.set_title(f"predicted vs true: Kendall τ = {tau:.3f} (n = {len(p)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
    return fig


def _column(df: Any, col: Any, default_name: str) -> tuple[np.ndarray, str]:
    if isinstance(col, str):
        if df is None or col not in df.columns:
            cols = [] if df is None else list(df.columns)
            raise ConfigError(f"column {col!r} is not in the frame; columns: {cols}")
        return df[col].to_numpy(dtype=np.float64, na_value=np.nan), col
    return np.asarray(col, dtype=np.float64).reshape(-1), default_name
