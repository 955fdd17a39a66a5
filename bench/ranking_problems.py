"""Search problems with KNOWN ground truth, for comparing sample-based strategies at equal budgets.

A `Problem` is a search space, a noise-free `truth` (vectorized over samples), the `noisy`
observation a strategy is told (truth + noise), an optional zero-cost `weak` label a user
could have before any evaluation, and the known `optimum` of the truth. The designs follow
the tabular and surrogate NAS benchmarks:

- ``cell201`` — a NAS-Bench-201-like cell (Dong & Yang 2020, "NAS-Bench-201: Extending the
  Scope of Reproducible Neural Architecture Search"): 6 edges of a 4-node DAG × 5 ops =
  15 625 architectures, accuracy-like truth (main effects, interactions of edges that share a
  node, chance-level accuracy for cells whose output is cut off), Student-t noise; optimum
  by enumeration.
- ``wide_interactions`` — 12 labels × 4 options (16.7 M): sparse dominant main effects,
  15 random pairwise interactions and one 3-way term; the exact optimum by min-sum
  variable elimination over the factor graph (`exact_min`).
- ``mixed_cardinality`` — 9 ordered labels with 2–8 options (138 240 archs): diminishing
  returns of capacity minus λ · log cost in one objective; optimum by enumeration.
- ``digits_unet`` — a surrogate benchmark in the manner of NAS-Bench-301 (Siems et al. 2020,
  "NAS-Bench-301 and the Case for Surrogate Benchmarks for Neural Architecture Search"): a
  ridge regression fitted on this project's 150 measured `mobile_unet` digits labels
  (``bench/data/mobile_unet_digits_labels.csv``) extends the truth to the whole 342-label
  space; the noise is the surrogate's cross-validated residual; the optimum is an estimate
  (best of random draws + greedy local search).

Every problem is built from fixed seeds (the same problem in every process) and has a
`describe()` dict (sizes, noise, optimum, truth statistics and the weak label's Spearman ρ
on 2000 random architectures) whose hash versions the benchmark's run cache. Used by
``bench/ranking_benchmark.py``; tested by ``tests/bench/test_ranking_problems.py``.
Print the problems' describe() as JSON:

    OMP_NUM_THREADS=1 .venv/bin/python bench/ranking_problems.py [cell201 wide_interactions ...]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, run as a script

from nas.space import SearchSpace

log = logging.getLogger(__name__)

#: Bump when a problem's definition changes in a way its describe() does not show.
CODE_VERSION = "1"
ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "runs" / "bench"  # gitignored
DESCRIBE_ARCHS = 2000  # random architectures behind describe()'s statistics
DESCRIBE_SEED = 12345

Samples = Sequence[Mapping[str, Any]]
TruthFn = Callable[[Samples], np.ndarray]
NoisyFn = Callable[[Samples, np.random.Generator], np.ndarray]
WeakFn = Callable[[Samples], np.ndarray]


@dataclass(frozen=True, eq=False)
class Problem:
    """A search problem with known ground truth (see the module doc).

    truth(samples) -> (N,) noise-free values; noisy(samples, rng) -> (N,) truth + noise (what
    a strategy is told); direction "min" | "max"; weak(samples) -> (N, H) zero-cost weak
    labels (column 0: the proxy, lower = predicted better) or None; optimum: the best truth
    over the space (exact when `optimum_exact`, else an estimate, see `optimum_how`).
    """

    name: str
    space: SearchSpace
    truth: TruthFn
    noisy: NoisyFn
    direction: str
    weak: WeakFn | None
    optimum: float
    description: str
    objective: str = "value"
    optimum_exact: bool = True
    optimum_how: str = "enumeration"
    noise: Mapping[str, Any] = field(default_factory=dict)  # kind, scale, std, df
    weak_columns: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # problem-specific facts
    #: truth of an option-index matrix (N, labels) (`space.encode(kind="index")`): for
    #: enumerations and large random screens that would be slow through sample dicts
    truth_index: Callable[[np.ndarray], np.ndarray] | None = None
    #: the generative prior of a factor-graph truth: (labels of a factor, sd its table was
    #: drawn from) per factor; () when the truth is not drawn so. Behind the benchmark's
    #: Bayes reference τ (`ranking_benchmark.bayes_reference_tau`)
    prior: tuple[tuple[tuple[int, ...], float], ...] = ()

    @property
    def sign(self) -> float:
        """+1 for min, −1 for max: ``sign * truth`` is a loss (lower = better)."""
        return 1.0 if self.direction == "min" else -1.0

    @property
    def synthetic(self) -> bool:
        return not self.extra.get("surrogate", False)

    def regret(self, value: np.ndarray | float) -> np.ndarray | float:
        """Simple regret |optimum − value| (≥ 0 up to an estimated optimum's error)."""
        return np.abs(self.optimum - np.asarray(value, dtype=np.float64))

    @functools.cached_property
    def _described(self) -> dict[str, Any]:
        rng = np.random.default_rng(DESCRIBE_SEED)
        samples = [self.space.canonical(s) for s in self.space.sample_many(DESCRIBE_ARCHS, rng)]
        t = np.asarray(self.truth(samples), dtype=np.float64)
        cards = [len(c) for _, c in self.space.items()]
        noise_std = float(self.noise.get("std", float("nan")))
        out: dict[str, Any] = {
            "name": self.name,
            "objective": self.objective,
            "direction": self.direction,
            "labels": len(cards),
            "cardinalities": {str(k): cards.count(k) for k in sorted(set(cards))},
            "size": float(self.space.size) if self.space.size > 2**53 else self.space.size,
            "noise": dict(self.noise),
            ("optimum" if self.optimum_exact else "optimum_estimate"): self.optimum,
            "optimum_how": self.optimum_how,
            f"truth_random_{DESCRIBE_ARCHS}": {
                "mean": float(t.mean()),
                "std": float(t.std()),
                "min": float(t.min()),
                "max": float(t.max()),
                "q10": float(np.quantile(t, 0.1)),
                "q90": float(np.quantile(t, 0.9)),
            },
            # how much of a random arch's spread one observation's noise is
            "noise_std_over_truth_std": noise_std / float(t.std()) if t.std() > 0 else None,
            "weak_columns": list(self.weak_columns),
            "weak_truth_spearman": None,
            "description": self.description,
            "code_version": CODE_VERSION,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }
        if self.weak is not None:
            w = np.asarray(self.weak(samples), dtype=np.float64)
            # both oriented lower = better: ρ > 0 means the weak label agrees with the truth
            out["weak_truth_spearman"] = float(spearmanr(w[:, 0], self.sign * t)[0])
        return out

    def describe(self) -> dict[str, Any]:
        """Sizes, noise, optimum, truth statistics and the weak label's Spearman ρ with the
        truth (both lower = better) on 2000 seeded random architectures."""
        return json.loads(json.dumps(self._described))

    def fingerprint(self) -> str:
        """Hash of describe() and the code version: a changed problem changes it."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- shared pieces --------------------------------------------------------------------------------
def student_t_noise(scale: float, df: float = 3.0) -> tuple[Callable, dict[str, Any]]:
    """(noise(n, rng) -> (n,), its description); std = scale · sqrt(df / (df − 2))."""

    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        return scale * rng.standard_t(df, size=n)

    std = scale * float(np.sqrt(df / (df - 2))) if df > 2 else float("inf")
    return draw, {"kind": "student_t", "df": df, "scale": scale, "std": std}


def gaussian_noise(std: float) -> tuple[Callable, dict[str, Any]]:
    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        return std * rng.standard_normal(n)

    return draw, {"kind": "gaussian", "scale": std, "std": std}


def _from_index(
    space: SearchSpace, fn: Callable[[np.ndarray], np.ndarray]
) -> Callable[[Samples], np.ndarray]:
    """A function of samples from a function of their option-index matrix (N, labels)."""

    def f(samples: Samples) -> np.ndarray:
        return fn(space.encode(list(samples), kind="index"))

    return f


def _additive_noisy(truth: TruthFn, draw: Callable) -> NoisyFn:
    def noisy(samples: Samples, rng: np.random.Generator) -> np.ndarray:
        t = truth(samples)
        return t + draw(len(t), rng)

    return noisy


def _indexed(
    space: SearchSpace,
    truth_idx: Callable[[np.ndarray], np.ndarray],
    weak_idx: Callable[[np.ndarray], np.ndarray],
    noise: tuple[Callable, dict[str, Any]],
    **fields: Any,
) -> Problem:
    """A synthetic problem from functions of the option-index matrix, with additive noise."""
    truth = _from_index(space, truth_idx)
    draw, info = noise
    return Problem(
        space=space,
        truth=truth,
        noisy=_additive_noisy(truth, draw),
        weak=_from_index(space, weak_idx),
        noise=info,
        truth_index=truth_idx,
        **fields,
    )


def enumerate_index(space: SearchSpace) -> np.ndarray:
    """Every option-index row of a small space, (size, labels) int64."""
    cards = [len(c) for _, c in space.items()]
    grids = np.meshgrid(*[np.arange(k) for k in cards], indexing="ij")
    return np.stack([g.ravel() for g in grids], 1).astype(np.int64)


def exact_min(factors: Sequence[tuple[tuple[int, ...], np.ndarray]], cards: Sequence[int]) -> float:
    """min over x of Σ_f table_f[x[vars_f]]: min-sum variable elimination (Dechter 1999,
    bucket elimination), eliminating the variable with the smallest joint scope first.

    factors: (variables, table) with table.shape = [cards[v] for v in variables].
    Exact; the cost is exponential only in the induced width of the factor graph.
    """
    fs = [(tuple(v), np.asarray(t, dtype=np.float64)) for v, t in factors]
    const = 0.0
    remaining = set(range(len(cards)))
    while remaining:
        var = min(sorted(remaining), key=lambda v: len(_scope([f for f in fs if v in f[0]])))
        remaining.discard(var)
        inside = [f for f in fs if var in f[0]]
        if not inside:
            continue
        fs = [f for f in fs if var not in f[0]]
        scope = sorted(_scope(inside))
        total = np.zeros([cards[v] for v in scope])
        for vs, t in inside:
            order = sorted(range(len(vs)), key=lambda i: scope.index(vs[i]))
            shape = [cards[v] if v in vs else 1 for v in scope]
            total = total + np.transpose(t, order).reshape(shape)
        reduced = total.min(axis=scope.index(var))
        rest = tuple(v for v in scope if v != var)
        if rest:
            fs.append((rest, reduced))
        else:
            const += float(reduced)
    return const + sum(float(t) for vs, t in fs if not vs)


def _scope(fs: Sequence[tuple[tuple[int, ...], np.ndarray]]) -> set[int]:
    return set().union(*[set(vs) for vs, _ in fs])


def factor_value(
    factors: Sequence[tuple[tuple[int, ...], np.ndarray]], idx: np.ndarray
) -> np.ndarray:
    """Σ_f table_f[idx[:, vars_f]] for an option-index matrix (N, labels)."""
    out = np.zeros(len(idx))
    for vs, t in factors:
        out += t[tuple(idx[:, v] for v in vs)]
    return out


# -- a. cell201 -----------------------------------------------------------------------------------
CELL_OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool")
CELL_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # node i → node j, 0 in, 3 out
# Main effect of each op on any edge (accuracy points before scaling): convolutions learn,
# "none" cuts a path; NAS-Bench-201's best cells are mostly conv3x3.
CELL_OP_EFFECT = np.array([-0.8, 0.3, 0.9, 1.4, -0.3])
CELL_INPUT_NONE = -2.5  # "none" on an input edge (0 → j) starves node j: catastrophic
CELL_PARAMS = np.array([0.0, 0.0, 1.0, 9.0, 0.0])  # weights per channel² of each op
CELL_CHANCE = 10.0  # accuracy of a cell whose output is cut off from the input (CIFAR-10)


def make_cell201(seed: int = 201) -> Problem:
    rng = np.random.default_rng(seed)
    labels = [f"edge.{i}-{j}" for i, j in CELL_EDGES]
    space = SearchSpace.from_choices({lab: list(CELL_OPS) for lab in labels}, name="cell201")
    n_ops = len(CELL_OPS)
    factors: list[tuple[tuple[int, ...], np.ndarray]] = []
    for e, (i, _) in enumerate(CELL_EDGES):
        main = CELL_OP_EFFECT + rng.normal(0.0, 0.35, n_ops)  # each edge has its own taste
        if i == 0:
            main[0] += CELL_INPUT_NONE
        factors.append(((e,), main))
    for a in range(len(CELL_EDGES)):
        for b in range(a + 1, len(CELL_EDGES)):
            if not set(CELL_EDGES[a]) & set(CELL_EDGES[b]):
                continue  # only edges that share a node interact
            table = rng.normal(0.0, 0.3, (n_ops, n_ops))
            ea, eb = CELL_EDGES[a], CELL_EDGES[b]
            if ea[1] == eb[1]:  # parallel edges into one node: a skip beside a conv is residual
                table[1, 3] += 0.6
                table[3, 1] += 0.6
                table[3, 3] -= 0.4  # two parallel 3×3 convs: redundant
            factors.append(((a, b), table))

    def connected(idx: np.ndarray) -> np.ndarray:
        live = idx != 0  # (N, 6): edge carries a signal
        r1 = live[:, 0]
        r2 = live[:, 1] | (r1 & live[:, 2])
        return live[:, 3] | (r1 & live[:, 4]) | (r2 & live[:, 5])

    every = enumerate_index(space)
    raw_all = factor_value(factors, every)
    ok = connected(every)
    lo, hi = float(raw_all[ok].min()), float(raw_all[ok].max())

    def truth_idx(idx: np.ndarray) -> np.ndarray:
        acc = 85.0 + 9.0 * (factor_value(factors, idx) - lo) / (hi - lo)
        return np.where(connected(idx), acc, CELL_CHANCE)

    def weak_idx(idx: np.ndarray) -> np.ndarray:
        # a params count: "bigger is better" (White et al. 2021), so minus params is the proxy
        params = CELL_PARAMS[idx].sum(1)
        return -params[:, None]

    noise = student_t_noise(0.3, 3.0)
    return _indexed(
        space,
        truth_idx,
        weak_idx,
        noise,
        name="cell201",
        direction="max",
        optimum=float(truth_idx(every).max()),
        description=(
            "NAS-Bench-201-like cell (Dong & Yang 2020): 6 edges of a 4-node DAG x 5 ops; "
            "accuracy-like truth scaled to 85-94 % over connected cells = per-edge main effects "
            "(conv3x3 > conv1x1 > skip > avgpool > none; none on an input edge catastrophic) + "
            "random pairwise interactions of edges sharing a node (skip beside conv3x3 into one "
            "node rewarded) ; cells with no path input->output score chance (10 %); Student-t "
            "(df 3) noise per architecture; weak = -params (conv3x3 9, conv1x1 1, others 0)"
        ),
        objective="accuracy",
        optimum_how="enumeration of all 15625 cells",
        weak_columns=("-params",),
        extra={
            "disconnected_share": float(1.0 - ok.mean()),
            # the random-arch std above is mostly the chance-level cells; among connected
            # cells (where the search happens) the noise is a larger share of the spread
            "connected_truth_std": float(truth_idx(every[ok]).std()),
            "noise_std_over_connected_truth_std": noise[1]["std"]
            / float(truth_idx(every[ok]).std()),
        },
    )


# -- b. wide_interactions -----------------------------------------------------------------------
WIDE_LABELS, WIDE_OPTIONS = 12, 4
WIDE_DOMINANT = (0, 5, 9)  # the labels that carry most of the variance
WIDE_PAIRS = 15


def make_wide_interactions(seed: int = 12) -> Problem:
    rng = np.random.default_rng(seed)
    labels = [f"x{i}" for i in range(WIDE_LABELS)]
    space = SearchSpace.from_choices(
        {lab: list(range(WIDE_OPTIONS)) for lab in labels}, name="wide_interactions"
    )
    k = WIDE_OPTIONS
    factors: list[tuple[tuple[int, ...], np.ndarray]] = []
    prior: list[tuple[tuple[int, ...], float]] = []
    for i in range(WIDE_LABELS):
        sd = 1.0 if i in WIDE_DOMINANT else 0.15
        main = rng.normal(0.0, sd, k)
        factors.append(((i,), main - main.mean()))
        prior.append(((i,), sd))
    all_pairs = [(a, b) for a in range(WIDE_LABELS) for b in range(a + 1, WIDE_LABELS)]
    chosen = rng.choice(len(all_pairs), size=WIDE_PAIRS, replace=False)
    pairs = [all_pairs[int(c)] for c in sorted(chosen)]
    for a, b in pairs:
        factors.append(((a, b), rng.normal(0.0, 0.3, (k, k))))
        prior.append(((a, b), 0.3))
    triple = tuple(sorted(int(v) for v in rng.choice(WIDE_LABELS, size=3, replace=False)))
    factors.append((triple, rng.normal(0.0, 0.15, (k, k, k))))
    prior.append((triple, 0.15))
    offset = 5.0  # a loss-like level, positive over the whole space

    # The user's zero-cost proxy: a fixed label-additive score, part aligned with the truth's
    # main effects and part unrelated (a cost that is only loosely tied to quality).
    proxy = [
        0.6 * t / (np.std(t) or 1.0) + rng.normal(0.0, 1.0, k) for _, t in factors[:WIDE_LABELS]
    ]

    def truth_idx(idx: np.ndarray) -> np.ndarray:
        return offset + factor_value(factors, idx)

    def weak_idx(idx: np.ndarray) -> np.ndarray:
        return sum(proxy[i][idx[:, i]] for i in range(WIDE_LABELS))[:, None]

    return _indexed(
        space,
        truth_idx,
        weak_idx,
        student_t_noise(0.3, 3.0),
        name="wide_interactions",
        direction="min",
        optimum=offset + exact_min(factors, [k] * WIDE_LABELS),
        description=(
            f"12 labels x 4 options (16.7 M archs), loss to minimize: main effects (labels "
            f"{list(WIDE_DOMINANT)} dominant, sd 1; the others sd 0.15) + {WIDE_PAIRS} random "
            f"pairwise interactions (sd 0.3) + one 3-way term on {list(triple)} (sd 0.15); "
            "Student-t (df 3) noise; weak = a label-additive proxy, part aligned with the "
            "main effects"
        ),
        objective="loss",
        optimum_how="exact: min-sum variable elimination over the factor graph",
        weak_columns=("proxy",),
        extra={"pairs": [list(p) for p in pairs], "triple": list(triple)},
        prior=tuple(prior),
    )


# -- c. mixed_cardinality -----------------------------------------------------------------------
MIXED_CHOICES: dict[str, list[Any]] = {
    "stem.width": [16, 24, 32, 48],
    "stage1.width": [24, 32, 48, 64, 80, 96],
    "stage2.width": [32, 48, 64, 96, 128, 160, 192, 256],
    "stage1.depth": [1, 2, 3, 4],
    "stage2.depth": [1, 2, 3, 4, 5],
    "kernel": [3, 5, 7],
    "expand": [2, 4, 6],
    "se": [0, 1],
    "act": ["relu", "hswish"],
}
MIXED_LAMBDA = 0.35  # accuracy points per doubling of MACs: interior optimum, weak ρ ≈ 0.4


def make_mixed_cardinality() -> Problem:
    space = SearchSpace.from_choices(MIXED_CHOICES, name="mixed_cardinality")
    vals = [
        np.asarray(v if not isinstance(v[0], str) else range(len(v)), dtype=np.float64)
        for v in MIXED_CHOICES.values()
    ]

    def parts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stem, w1, w2, d1, d2, ker, exp, se, act = (vals[j][idx[:, j]] for j in range(len(vals)))
        # capacity of each stage: log width × sqrt depth × a little of the expansion
        c1 = np.log2(w1) * np.sqrt(d1) * exp**0.25
        c2 = np.log2(w2) * np.sqrt(d2) * exp**0.25
        rf = (ker - 1) * (d1 + d2)  # receptive field
        quality = (
            70.0
            + 9.0 * (1 - np.exp(-c1 / 6.0))
            + 12.0 * (1 - np.exp(-c2 / 9.0))
            + 4.0 * (1 - np.exp(-rf / 10.0))
            + 1.2 * np.log2(stem / 16.0) / np.log2(3.0)
            + 0.8 * se * (1 + 0.1 * d2)
            + 0.4 * act
            - 0.02 * (ker - 3) * d2 * (w2 / 64.0)  # large kernels on wide stages overfit
        )
        macs = (
            stem**2 * 9 * 32**2
            + w1 * w1 * exp * d1 * (2 + ker**2 / w1) * 16**2
            + w2 * w2 * exp * d2 * (2 + ker**2 / w2) * 8**2
        ) * (1 + 0.02 * se)
        params = stem**2 * 9 + w1 * w1 * exp * d1 * 2 + w2 * w2 * exp * d2 * 2
        return quality, macs, params

    every = enumerate_index(space)
    macs_min = float(parts(every)[1].min())

    def truth_idx(idx: np.ndarray) -> np.ndarray:
        quality, macs, _ = parts(idx)
        return quality - MIXED_LAMBDA * np.log2(macs / macs_min)

    def weak_idx(idx: np.ndarray) -> np.ndarray:
        _, macs, params = parts(idx)
        return np.stack([-np.log(params), np.log(macs)], 1)

    return _indexed(
        space,
        truth_idx,
        weak_idx,
        gaussian_noise(0.25),
        name="mixed_cardinality",
        direction="max",
        optimum=float(truth_idx(every).max()),
        description=(
            "9 ordered labels with 2-8 options (widths, depths, kernel, expansion, SE, "
            "activation; 138240 archs); score to maximize = accuracy-like quality with "
            f"diminishing returns of stage capacity - {MIXED_LAMBDA} points per doubling of "
            "MACs; Gaussian noise; weak = [-log params, log MACs]"
        ),
        objective="score",
        optimum_how="enumeration of all 138240 archs",
        weak_columns=("-log params", "log macs"),
    )


# -- d. digits_unet -------------------------------------------------------------------------------
DIGITS_COSTS = ("params", "macs", "bytes", "latency_ms")
DIGITS_CV_FOLDS = 5
DIGITS_RANDOM = 50_000  # random archs screened for the optimum estimate
DIGITS_STARTS = 8  # local searches from the best of them


def _digits_structure(space: SearchSpace) -> tuple[list[int], Callable[[np.ndarray], np.ndarray]]:
    """The structural (non-quant) labels and a vectorized canonicalization of their indices.

    `mobile_unet`'s canonicalize resets the inner width of blocks a depth removes and the heads
    of stages without attention to their defaults; the features must not see those labels (a
    sample and its canonical form are the same architecture), so they are reset here too.
    """
    labels = space.labels
    struct = [j for j, lab in enumerate(labels) if not lab.endswith(".quant")]
    pos = {lab: j for j, lab in enumerate(labels)}
    n_stages = sum(1 for lab in labels if lab.startswith("stage.") and lab.endswith(".depth"))
    depth_opts = {s: np.asarray(space[f"stage.{s}.depth"].options) for s in range(n_stages)}
    rules: list[tuple[int, Callable[[np.ndarray], np.ndarray], int]] = []
    for lab in labels:
        parts = lab.split(".")
        default = space[lab].index(space[lab].default)
        if parts[0] == "down" and parts[2].startswith("res"):
            s, j = int(parts[1]), int(parts[2][3:])
            d = depth_opts[s]
            rules.append(
                (pos[lab], lambda ix, s=s, j=j, d=d: d[ix[:, pos[f"stage.{s}.depth"]]] > j, default)
            )
        elif parts[0] == "up" and parts[2].startswith("res"):
            u, j = int(parts[1]), int(parts[2][3:])
            s = n_stages - 1 - u
            d = depth_opts[s]
            dmax = int(d.max())
            rules.append(
                (
                    pos[lab],
                    lambda ix, s=s, j=j, d=d, dmax=dmax: (
                        (d[ix[:, pos[f"stage.{s}.depth"]]] > j) | (j == dmax)
                    ),
                    default,
                )
            )
        elif parts[0] == "stage" and parts[2] == "heads":
            s = int(parts[1])
            attn = np.asarray(space[f"stage.{s}.attn"].options)
            rules.append(
                (pos[lab], lambda ix, s=s, a=attn: a[ix[:, pos[f"stage.{s}.attn"]]] > 0, default)
            )

    def canonical_struct(idx: np.ndarray) -> np.ndarray:
        out = idx[:, struct].copy()
        col = {j: c for c, j in enumerate(struct)}
        for j, used, default in rules:
            out[:, col[j]] = np.where(used(idx), idx[:, j], default)
        return out

    return struct, canonical_struct


def make_digits_unet(labels_csv: Path | None = None, cache: Path | None = CACHE_DIR) -> Problem:
    """The NAS-Bench-301-style surrogate of the digits `mobile_unet` labels (see module doc)."""
    import digits_labels as dl  # heavy (torch, the supernet trainer): only for this problem
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import search_spaces  # noqa: F401  (registers mobile_unet)
    from nas import get_space

    t0 = time.perf_counter()
    csv_path = Path(labels_csv or dl.LABELS_CSV)
    space = get_space(dl.SupernetSettings().space).space()
    samples, cols = dl.read_labels(csv_path, space)
    cost = dl.cost_model(space)
    struct, canonical_struct = _digits_structure(space)
    sizes = np.array([len(space[space.labels[j]]) - 1 for j in struct], dtype=np.float64)

    def features(idx: np.ndarray) -> np.ndarray:
        # the cost table's view (today's table, also for the 150 labelled rows: the CSV's
        # latency came from an older table) + the structural labels as ordinals
        c = cost.predict_index(idx, DIGITS_COSTS)
        f = [np.log(c["params"]), np.log(c["macs"]), np.log(c["bytes"]), c["latency_ms"]]
        f.append(c["bytes"] / c["params"])  # bytes per weight: the quant schemes' bit widths
        return np.concatenate([np.stack(f, 1), canonical_struct(idx) / np.maximum(sizes, 1)], 1)

    idx_lab = space.encode(samples, kind="index")
    X = features(idx_lab)
    # log: the loss is positive and right-skewed (one fine-tune diverged to 2x the median);
    # a squared-error fit in loss units would chase that one row
    y = np.log(cols[dl.STRONG_COLUMN])
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 30)))
    cv = KFold(DIGITS_CV_FOLDS, shuffle=True, random_state=0)
    pred = cross_val_predict(model, X, y, cv=cv)
    resid = y - pred
    cv_tau = float(kendalltau(pred, y)[0])
    sigma = float(resid.std())  # the surrogate's CV residual in log loss: the noise
    model.fit(X, y)

    def truth_idx(idx: np.ndarray) -> np.ndarray:
        return np.exp(model.predict(features(idx)))

    truth = _from_index(space, truth_idx)

    def noisy(s: Samples, rng: np.random.Generator) -> np.ndarray:
        t = truth(s)
        return t * np.exp(sigma * rng.standard_normal(len(t)))  # the CV residual, in log space

    def weak_idx(idx: np.ndarray) -> np.ndarray:
        c = cost.predict_index(idx, ("params", "latency_ms"))
        return np.stack([-np.log(c["params"]), c["latency_ms"]], 1)

    # the labels and the fitted surrogate: what the cached optimum estimate depends on
    probe = np.random.default_rng(0).integers(0, sizes.max() + 1, size=(256, len(space)))
    probe %= np.array([len(c) for _, c in space.items()])  # a fixed set of archs: the table
    fit = [hashlib.sha256(csv_path.read_bytes()).hexdigest(), model.predict(features(probe))]
    fit += [model[-1].coef_, [model[-1].intercept_]]
    fit = [v if isinstance(v, str) else [round(float(x), 12) for x in v] for v in fit]
    fit_digest = hashlib.sha256(json.dumps(fit).encode()).hexdigest()[:16]
    opt, how = _digits_optimum(space, truth_idx, fit_digest, cache)
    log.info(
        "digits_unet: surrogate built in %.1f s (CV tau %.3f)", time.perf_counter() - t0, cv_tau
    )
    return Problem(
        name="digits_unet",
        space=space,
        truth=truth,
        noisy=noisy,
        direction="min",
        weak=_from_index(space, weak_idx),
        optimum=opt,
        description=(
            "NAS-Bench-301-style surrogate (Siems et al. 2020) of the 150 measured digits "
            "mobile_unet labels (finetuned_val_loss, 20 QAT steps): ridge regression of log loss "
            "on the cost table's log params / log MACs / log bytes / latency / bytes per weight + "
            f"the 30 structural labels (ordinal, canonicalized); {DIGITS_CV_FOLDS}-fold CV "
            f"Kendall tau on the 150 real labels = {cv_tau:.3f}; noise = the CV residual std "
            f"in log loss ({sigma:.4f}, multiplicative Gaussian); weak = [-log params, table "
            "latency_ms] (zero-cost, CostModel); optimum = an estimate (" + how + ")"
        ),
        objective="finetuned_val_loss",
        optimum_exact=False,
        optimum_how=how,
        noise={"kind": "lognormal", "scale": sigma, "std": sigma * float(np.exp(pred).mean())},
        weak_columns=("-log params", "latency_ms"),
        extra={
            "surrogate": True,
            "labels_csv": str(
                csv_path.relative_to(ROOT) if csv_path.is_relative_to(ROOT) else csv_path
            ),
            "n_labels": len(y),
            "surrogate_model": f"ridge(alpha={float(model[-1].alpha_):.4g}) on "
            f"{X.shape[1]} features, target log loss",
            "surrogate_cv_kendall_tau": cv_tau,
            "surrogate_cv_spearman": float(spearmanr(pred, y)[0]),
            "surrogate_cv_residual_std_log": sigma,
            "surrogate_fit_digest": fit_digest,
            "noise_note": "std in loss units = the log-space sigma x the mean CV prediction",
        },
        truth_index=truth_idx,
    )


def _digits_optimum(
    space: SearchSpace,
    truth_idx: Callable[[np.ndarray], np.ndarray],
    digest: str,
    cache: Path | None,
) -> tuple[float, str]:
    """Best truth of `DIGITS_RANDOM` seeded random archs, then greedy best-improvement local
    search (every single-label change per step) from the best `DIGITS_STARTS`; cached in
    ``runs/bench`` by the surrogate's digest (every process builds the problem)."""
    how = (
        f"min of {DIGITS_RANDOM} seeded random archs, then greedy single-label local search "
        f"from the best {DIGITS_STARTS} until no change improves"
    )
    path = cache / "ranking_problems_optima.json" if cache is not None else None
    key = f"digits_unet:{digest}:{DIGITS_RANDOM}:{DIGITS_STARTS}:{CODE_VERSION}"
    known: dict[str, float] = {}
    if path is not None and path.is_file():
        known = json.loads(path.read_text())
        if key in known:
            return float(known[key]), how
    t0 = time.perf_counter()
    rng = np.random.default_rng(301)
    cards = np.array([len(c) for _, c in space.items()])
    idx = rng.integers(0, cards, size=(DIGITS_RANDOM, len(cards)))
    t = np.concatenate([truth_idx(idx[i : i + 5000]) for i in range(0, len(idx), 5000)])
    best = float(t.min())
    for start in np.argsort(t)[:DIGITS_STARTS]:
        x, fx = idx[start].copy(), float(t[start])
        while True:
            # every single-label change of x: (Σ (cards − 1), labels)
            moves = [(j, o) for j in range(len(cards)) for o in range(cards[j]) if o != x[j]]
            nb = np.repeat(x[None], len(moves), 0)
            js = np.array([m[0] for m in moves])
            nb[np.arange(len(moves)), js] = [m[1] for m in moves]
            v = truth_idx(nb)
            k = int(np.argmin(v))
            if v[k] >= fx - 1e-15:
                break
            x, fx = nb[k], float(v[k])
        best = min(best, fx)
    log.info("digits_unet: optimum estimate %.6f in %.1f s", best, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        known[key] = best
        path.write_text(json.dumps(known, indent=1) + "\n")
    return best, how


# -- registry -------------------------------------------------------------------------------------
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "cell201": make_cell201,
    "wide_interactions": make_wide_interactions,
    "mixed_cardinality": make_mixed_cardinality,
    "digits_unet": make_digits_unet,
}
SYNTHETIC = ("cell201", "wide_interactions", "mixed_cardinality")


@functools.cache
def get_problem(name: str) -> Problem:
    """The problem `name`, built once per process (all seeds are fixed)."""
    if name not in PROBLEMS:
        raise KeyError(f"unknown problem {name!r}; choose from {sorted(PROBLEMS)}")
    return PROBLEMS[name]()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print describe() of the problems as JSON.")
    ap.add_argument("problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    doc = {
        p: {**get_problem(p).describe(), "fingerprint": get_problem(p).fingerprint()}
        for p in args.problems
    }
    print(json.dumps(doc, indent=1))  # the JSON is this command's output


if __name__ == "__main__":
    main()
