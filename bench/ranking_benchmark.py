"""Sample-based search strategies side by side at equal evaluations, on known ground truth.

What it measures: for each problem of `bench/ranking_problems.py` (``cell201``, a
NAS-Bench-201-like cell, Dong & Yang 2020; ``wide_interactions``; ``mixed_cardinality``;
``digits_unet``, a NAS-Bench-301-style surrogate of this project's measured digits labels,
Siems et al. 2020), each strategy built by `nas.strategies.make_strategy` with its
documented defaults — ``random``, ``tpe``, ``nsga2``, ``evolution`` (regularized
evolution), ``predictor`` (AceNAS-style learning to rank, given the problem's zero-cost
weak label as ``weak_fn``) — and, where a default cannot act within the smallest budget
(a population larger than N: the strategy is still in its random warm-up), a clearly named
variant with a setting that can (``evolution(pop=12,S=4)``, ``nsga2(pop=10)``).

How: per (problem, strategy, seed), ONE run of max(budgets) evaluations: ask → the
problem's noisy observation (truth + noise; seeded per architecture and repeat, so every
strategy sees the same observation of the same architecture) → tell. The result at budget
N is the TRUTH of the best-by-observed architecture among the first N evaluations (the
"test accuracy of the best-by-validation architecture" of the tabular benchmarks) and its
simple regret |optimum − truth|; the number of distinct architectures asked; for strategies
with ``rank_scores(samples)`` (lower = predicted better), Kendall τ between the scores and
the truth (oriented lower = better) on 1000 held-out random architectures per problem and
seed, after 25, 50, 100, 200 of the search's own labels (measured on a deep copy, so it
cannot perturb the search), and the same for a fresh strategy told 25, 50, 100, 200
uniformly random architectures (``kendall_tau_random_labels``: how well the ranker orders
the whole space from N labels; the search's own labels crowd the good region, and a
ranker of the good region need not order the rest). Aggregates: mean / std / median over seeds per problem × strategy × budget, the
best strategy on the mean per problem × budget, seconds per run, findings (defaults that
are random search at small N, strategies worse than random), and claims about the
predictor: (i) its mean best-found improves from the smallest to the largest budget on
every problem (strictly, and monotonically over every budget), and so does the truth of
its `recommend()` (the told architecture its ranker predicts best); (ii) at N = 50 and 100
it beats tpe and evolution on the mean (wins and losses per problem); (iii) τ from 100
random labels ≥ 0.65 on the synthetic problems, beside what 100 labels allow at best where
a problem's truth has a generative prior (`bayes_reference_tau`: the posterior mean under
that prior) and the best label-additive model (`additive_ceiling`).

Resumable: finished runs are appended to a JSON-lines cache under the gitignored
``runs/bench/``; a run's key holds the problem's fingerprint (hash of its describe() and
code version), the strategy's options and a hash of the strategy's source files, the seed
and the budgets, so a changed problem or strategy is rerun and an interrupted benchmark
continues where it stopped. Runs go to `--workers` processes (1 torch / OpenMP thread each).
Prints the JSON (without the per-run figures) and writes it to
``bench/results/ranking_benchmark.json`` (with them; the traces — every observation and
truth — stay in the run cache).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ranking_benchmark.py \\
        [--problems cell201 wide_interactions mixed_cardinality digits_unet] \\
        [--strategies random tpe nsga2 nsga2(pop=10) evolution evolution(pop=12,S=4) predictor] \\
        [--budgets 25 50 100 200] [--seeds 10] [--workers 2] \\
        [--out bench/results/ranking_benchmark.json]

``predictor-standin`` (`predictors.testing.small_predictor_guided`) exercises the
predictor's code path fast; it is marked as a stand-in and never a result.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import itertools
import json
import logging
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, run as a script
import ranking_problems as rp
from record import publish

from nas.errors import RegistryError
from nas.ranking import ZeroCost
from nas.strategies import STRATEGIES, Strategy, make_strategy
from nas.strategies.base import sample_key

log = logging.getLogger(__name__)

#: Bump when the run protocol changes (invalidates every cached run).
CODE_VERSION = "2"
ROOT = rp.ROOT
RESULT = ROOT / "bench" / "results" / "ranking_benchmark.json"
CACHE = ROOT / "runs" / "bench" / "ranking_benchmark_runs.jsonl"  # runs/ is gitignored
BUDGETS = (25, 50, 100, 200)
HOLDOUT = 1000  # held-out random archs for the ranker's Kendall τ
TAU_TARGET = 0.65
CLAIM_BUDGETS = (50, 100)
CLAIM_RIVALS = ("tpe", "evolution")
TAU_CLAIM_LABELS = 100


@dataclass(frozen=True)
class StrategySpec:
    """How a benchmarked strategy is built: `make_strategy(base, ..., **options)`.

    weak: pass the problem's weak label as ``weak_fn``; standin: built by
    `predictors.testing.small_predictor_guided` (a code-path check, never a result).
    """

    name: str
    base: str
    options: Mapping[str, Any] = field(default_factory=dict)
    weak: bool = False
    standin: bool = False
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "options": dict(self.options),
            "weak_fn": "the problem's weak label, declared zero-cost (nas.ranking.ZeroCost)"
            if self.weak
            else None,
            "standin": self.standin,
            "note": self.note,
        }


SPECS: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec("random", "random"),
        StrategySpec("tpe", "tpe"),
        StrategySpec("nsga2", "nsga2"),
        StrategySpec(
            "nsga2(pop=10)",
            "nsga2",
            {"population_size": 10},
            note="the default population (50) is sampled at random: a generation that fits N=25",
        ),
        StrategySpec("evolution", "evolution"),
        StrategySpec(
            "evolution(pop=12,S=4)",
            "evolution",
            {"population_size": 12, "sample_size": 4},
            note="the default population (50) is a random warm-up longer than N=25 and 50",
        ),
        StrategySpec("predictor", "predictor", weak=True),
        StrategySpec(
            "predictor(no weak)",
            "predictor",
            note="the defaults without the problem's weak label (strong labels only)",
        ),
        StrategySpec(
            "predictor-standin",
            "predictor",
            standin=True,
            note="predictors.testing.small_predictor_guided: code-path check, NOT a result",
        ),
    )
}
DEFAULT_STRATEGIES = (
    "random",
    "tpe",
    "nsga2",
    "nsga2(pop=10)",
    "evolution",
    "evolution(pop=12,S=4)",
    "predictor",
)
#: Options whose default is a random warm-up: the strategy is random search until then.
WARMUP_OPTIONS = {
    "evolution": "population_size",
    "nsga2": "population_size",
    "tpe": "n_startup_trials",
}


# -- building ---------------------------------------------------------------------------------
def objectives(problem: rp.Problem) -> list[tuple[str, str]]:
    return [(problem.objective, problem.direction)]


def build(spec: StrategySpec, problem: rp.Problem, seed: int) -> Strategy:
    if spec.standin:
        from predictors.testing import small_predictor_guided

        return small_predictor_guided(problem.space, objectives(problem), seed)
    options = dict(spec.options)
    if spec.weak and problem.weak is not None:
        # the problems' weak labels are zero-cost (params, a latency table, a fixed proxy):
        # declared so, the strategy may also use them as features of its candidates
        options["weak_fn"] = ZeroCost(problem.weak)
    return make_strategy(spec.base, problem.space, objectives(problem), seed, **options)


def base_defaults(base: str) -> dict[str, Any]:
    """The documented keyword defaults of a registered strategy (JSON-able ones)."""
    params = inspect.signature(STRATEGIES.get(base).__init__).parameters
    out = {}
    for k, p in params.items():
        if p.default is inspect.Parameter.empty or k in ("seed",):
            continue
        d = p.default
        out[k] = d if isinstance(d, (int, float, str, bool, type(None))) else repr(d)
    return out


def strategy_fingerprint(spec: StrategySpec) -> str:
    """Hash of the strategy's source files (its class's modules; for the predictor also the
    `predictors` package and `nas.ranking`) and of Optuna's version: a rewritten strategy
    invalidates its cached runs."""
    files: set[Path] = set()
    try:
        cls = STRATEGIES.get(spec.base)
    except RegistryError:  # not registered (yet): the run records the error, no hash
        return "unregistered"
    for c in cls.__mro__:
        f = inspect.getsourcefile(c) if c.__module__.startswith("nas") else None
        if f:
            files.add(Path(f))
    if spec.base == "predictor" or spec.standin:
        files |= set((ROOT / "predictors").glob("*.py"))
        files.add(ROOT / "nas" / "ranking.py")
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    if spec.base in ("tpe", "nsga2"):
        import optuna

        h.update(optuna.__version__.encode())
    return h.hexdigest()[:16]


def run_key(
    problem: str, fingerprint: str, spec: StrategySpec, sfp: str, seed: int, budgets: Sequence[int]
) -> str:
    text = json.dumps(
        [
            CODE_VERSION,
            problem,
            fingerprint,
            spec.name,
            spec.as_json(),
            sfp,
            seed,
            list(budgets),
            HOLDOUT,
            FRESH_REPEATS,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# -- one run ----------------------------------------------------------------------------------
FRESH_REPEATS = False  # a repeated evaluation of one architecture draws new noise


def observation_rng(seed: int, key: str, repeat: int) -> np.random.Generator:
    """The noise of the `repeat`-th evaluation of one architecture in seed `seed`: the same
    for every strategy (common random numbers). With ``FRESH_REPEATS`` off (the default) a
    repeated ask observes the same value, as a tabular benchmark's query or mqnas'
    fixed-seed fine-tune does: re-asking an architecture buys no lucky second draw."""
    rep = repeat if FRESH_REPEATS else 0
    return np.random.default_rng([seed, zlib.crc32(key.encode()), rep, 0xE7A1])


def holdout_set(problem: rp.Problem, seed: int, n: int = HOLDOUT) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 0x401D])
    return [problem.space.canonical(s) for s in problem.space.sample_many(n, rng)]


def run_one(problem_name: str, spec_name: str, seed: int, budgets: Sequence[int]) -> dict[str, Any]:
    """max(budgets) ask → noisy evaluation → tell; the traces and timings (see module doc)."""
    problem = rp.get_problem(problem_name)
    spec = SPECS[spec_name]
    n = max(budgets)
    rec: dict[str, Any] = {
        "problem": problem_name,
        "strategy": spec_name,
        "seed": seed,
        "n_evals": n,
        "error": None,
    }
    t0 = time.perf_counter()
    try:
        strat = build(spec, problem, seed)
    except Exception as e:  # noqa: BLE001  (defaults that do not work yet are a finding)
        rec["error"] = f"building: {type(e).__name__}: {e}"
        log.warning("%s on %s seed %d: %s", spec_name, problem_name, seed, rec["error"])
        return rec
    t_build = time.perf_counter() - t0
    ranks = callable(getattr(strat, "rank_scores", None))
    holdout, holdout_loss = None, None
    if ranks:
        holdout = holdout_set(problem, seed)
        holdout_loss = problem.sign * problem.truth(holdout)
    obs = problem.objective
    observed, truth, distinct = [], [], []
    repeats: dict[str, int] = {}
    tau: dict[str, float | None] = {}
    recommended: dict[str, float] = {}  # truth of the ranker's pick among the told archs
    t_strategy = t_eval = t_tau = 0.0
    try:
        for i in range(n):
            ta = time.perf_counter()
            s = strat.ask()
            tb = time.perf_counter()
            key = sample_key(s)
            rep = repeats.get(key, 0)
            repeats[key] = rep + 1
            y = float(problem.noisy([s], observation_rng(seed, key, rep))[0])
            observed.append(y)
            truth.append(float(problem.truth([s])[0]))
            distinct.append(len(repeats))
            tc = time.perf_counter()
            strat.tell(s, {obs: y})
            td = time.perf_counter()
            t_strategy += (tb - ta) + (td - tc)
            t_eval += tc - tb
            if ranks and (i + 1) in budgets:
                t, pick = _tau(strat, holdout, holdout_loss)
                tau[str(i + 1)] = t
                if pick is not None:
                    recommended[str(i + 1)] = float(problem.truth([pick])[0])
                t_tau += time.perf_counter() - td
    except Exception as e:  # noqa: BLE001  (a strategy that fails mid-run is a result)
        rec["error"] = f"at evaluation {len(observed) + 1}: {type(e).__name__}: {e}"
        log.warning("%s on %s seed %d: %s", spec_name, problem_name, seed, rec["error"])
        return rec
    tr = time.perf_counter()
    tau_random = (
        random_label_taus(spec, problem, seed, budgets, holdout, holdout_loss) if ranks else None
    )
    t_tau += time.perf_counter() - tr
    rec.update(
        observed=observed,
        truth=truth,
        distinct=distinct,
        tau=tau if ranks else None,
        tau_random_labels=tau_random,
        recommended_truth=recommended if ranks else None,
        seconds={
            "total": time.perf_counter() - t0,
            "build": t_build,
            "strategy": t_strategy,  # ask + tell
            "evaluation": t_eval,
            "tau": t_tau,
        },
    )
    return rec


def _tau(
    strat: Strategy, holdout: list[dict[str, Any]], loss: np.ndarray
) -> tuple[float | None, dict[str, Any] | None]:
    """Kendall τ of rank_scores (lower = better) vs the truth as a loss, and the strategy's
    `recommend()` among the told archs (None without one), on a copy of the strategy (a fit
    that rank_scores triggers must not change what the search asks next)."""
    try:
        probe = copy.deepcopy(strat)
    except Exception:  # noqa: BLE001  (an uncopyable component: measure the live one)
        probe = strat
    scores = np.asarray(probe.rank_scores(holdout), dtype=np.float64)
    t = kendalltau(scores, loss).statistic
    tau = None if not np.isfinite(t) else float(t)
    pick = probe.recommend(1) if callable(getattr(probe, "recommend", None)) else []
    return tau, (pick[0] if pick else None)


def random_label_taus(
    spec: StrategySpec,
    problem: rp.Problem,
    seed: int,
    budgets: Sequence[int],
    holdout: list[dict[str, Any]],
    loss: np.ndarray,
) -> dict[str, float | None]:
    """Kendall τ of the strategy's ranker told N uniformly random architectures (their noisy
    observations), N in `budgets`: how well the ranker ranks the whole space from N labels,
    apart from where the search put its labels (which concentrate on the good region)."""
    rng = np.random.default_rng([seed, 0x7A0])
    train = [problem.space.canonical(s) for s in problem.space.sample_many(max(budgets), rng)]
    y = problem.noisy(train, np.random.default_rng([seed, 0x7A1]))
    out = {}
    for n in budgets:
        strat = build(spec, problem, seed)
        for s, v in zip(train[:n], y[:n], strict=True):
            strat.tell(s, {problem.objective: float(v)})
        out[str(n)] = _tau(strat, holdout, loss)[0]
    return out


ORACLE_DRAWS = 400  # noise draws behind the winner's-curse reference
ORACLE_MAX_SIZE = 200_000  # spaces enumerated for it


def winners_curse_reference(
    problem: rp.Problem, budgets: Sequence[int], draws: int = ORACLE_DRAWS
) -> dict[str, float] | None:
    """What the best-by-observed metric gives a strategy that knows the truth: it asks the
    N truly best architectures (distinct, as every strategy here does), each observed once
    with the problem's noise; the mean over `draws` noise draws of the truth of the
    best-by-observed one, per N. Under heavy-tailed noise it FALLS with N: every further
    architecture is worse and may draw the luckiest observation. None for a space too large
    to enumerate (or without `truth_index`)."""
    sp = problem.space
    if problem.truth_index is None or sp.size > ORACLE_MAX_SIZE:
        return None
    every = rp.enumerate_index(sp)
    order = np.argsort(problem.sign * problem.truth_index(every), kind="stable")
    top = sp.decode(every[order[: max(budgets)]])
    truth = problem.truth(top)
    rng = np.random.default_rng(0x0C0FFEE)
    out = {}
    for n in budgets:
        best = [
            truth[int(np.argmin(problem.sign * problem.noisy(top[:n], rng)))] for _ in range(draws)
        ]
        out[str(n)] = float(np.mean(best))
    return out


CEILING_TRAIN = 20_000  # noise-free random archs behind the additive ceiling


def additive_ceiling(problem: rp.Problem, seed: int = 0) -> float:
    """Kendall τ on held-out random archs of the best label-additive model (ridge on the
    one-hot encoding, fitted on `CEILING_TRAIN` noise-free truths): what any ranker that
    sees each label's option alone — no interactions — can reach at best."""
    from sklearn.linear_model import Ridge

    sp = problem.space
    train = [sp.canonical(s) for s in sp.sample_many(CEILING_TRAIN, np.random.default_rng(seed))]
    hold = holdout_set(problem, seed + 1)
    fit = Ridge(alpha=1e-3).fit(sp.encode(train, kind="onehot"), problem.truth(train))
    return float(kendalltau(fit.predict(sp.encode(hold, kind="onehot")), problem.truth(hold))[0])


def bayes_reference_tau(
    problem: rp.Problem, n_labels: int, seeds: int = 10
) -> dict[str, float] | None:
    """Mean Kendall τ on held-out random archs of the Bayes posterior mean under the
    problem's own generative prior (`Problem.prior`), from `n_labels` noisy random
    observations: about what the best possible ranker reaches from that many labels.

    Each factor's table has i.i.d. N(0, sd²) cells, so the truth is a GP with kernel
    Σ_f sd_f² · 1[x_f = x'_f] (x_f: the labels of factor f), and the posterior mean is
    k*ᵀ(K + σ²I)⁻¹(y − ȳ) (Rasmussen & Williams 2006, eq. 2.25) with σ² the noise's variance
    — exact for Gaussian noise, the best linear estimate under Student-t (an iteratively
    reweighted Student-t fit gave the same τ ±0.005 on wide_interactions at 100 and 200
    labels, 0.03 more at 400). Two references:

    - ``interactions_known``: the true factors (which labels interact, and every sd);
    - ``interactions_unknown``: the same sds, but each interaction order's prior variance
      spread evenly over every set of that many labels — a ranker told the prior's
      variances but not which labels interact, as any real ranker is.

    None for a problem without a generative prior.
    """
    if not problem.prior:
        return None
    sp = problem.space
    n_labels_space = len(sp.labels)
    known = [(tuple(s), float(sd) ** 2) for s, sd in problem.prior]
    unknown = [(s, v) for s, v in known if len(s) == 1]
    for order in sorted({len(s) for s, _ in known} - {1}):
        total = sum(v for s, v in known if len(s) == order)
        every = list(itertools.combinations(range(n_labels_space), order))
        unknown += [(s, total / len(every)) for s in every]
    noise_var = float(problem.noise["std"]) ** 2

    def kernel(a: np.ndarray, b: np.ndarray, scopes) -> np.ndarray:
        eq = a[:, None, :] == b[None, :, :]  # (n, m, labels)
        return sum(v * eq[:, :, list(s)].all(-1) for s, v in scopes)

    taus: dict[str, list[float]] = {"interactions_known": [], "interactions_unknown": []}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 0xBA7E5])
        train = [sp.canonical(s) for s in sp.sample_many(n_labels, rng)]
        y = problem.noisy(train, rng)
        hold = holdout_set(problem, seed)
        a = sp.encode(train, kind="index")
        b = sp.encode(hold, kind="index")
        for name, scopes in (("interactions_known", known), ("interactions_unknown", unknown)):
            k = kernel(a, a, scopes) + noise_var * np.eye(len(a))
            alpha = np.linalg.solve(k, y - y.mean())
            taus[name].append(kendalltau(kernel(b, a, scopes) @ alpha, problem.truth(hold))[0])
    return {k: float(np.mean(v)) for k, v in taus.items()}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _worker(args: tuple[str, str, int, tuple[int, ...]]) -> dict[str, Any]:
    return run_one(*args)


# -- results ----------------------------------------------------------------------------------
def at_budgets(rec: Mapping[str, Any], problem: rp.Problem, budgets: Sequence[int]) -> dict:
    """Per budget N: truth of the best-by-observed arch among the first N evaluations, its
    regret, its observed value, the best truth among them (what an oracle would have
    picked), and the distinct archs asked."""
    obs = problem.sign * np.asarray(rec["observed"])  # lower = better
    tru = np.asarray(rec["truth"])
    out = {}
    for n in budgets:
        b = int(np.argmin(obs[:n]))  # first of ties
        out[str(n)] = {
            "best_truth": float(tru[b]),
            "regret": float(problem.regret(tru[b])),
            "observed_best": float(problem.sign * obs[b]),
            "oracle_best_truth": float(problem.sign * np.min(problem.sign * tru[:n])),
            "distinct": int(rec["distinct"][n - 1]),
        }
        if rec.get("recommended_truth"):
            out[str(n)]["recommended_truth"] = rec["recommended_truth"][str(n)]
    return out


def _summary(
    rec: Mapping[str, Any], problems: Mapping[str, rp.Problem], budgets: Sequence[int]
) -> dict[str, Any]:
    out = {k: rec.get(k) for k in ("key", "problem", "strategy", "seed", "error")}
    if not rec.get("error"):
        out["at_budget"] = at_budgets(rec, problems[rec["problem"]], budgets)
        out["kendall_tau"] = rec.get("tau")
        out["kendall_tau_random_labels"] = rec.get("tau_random_labels")
        out["seconds"] = rec["seconds"]
    return out


def _stats(v: Sequence[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),  # over seeds, ddof = 0
        "median": float(np.median(a)),
        "n": len(a),
    }


def aggregate(
    runs: list[dict[str, Any]], problems: Mapping[str, rp.Problem], budgets: Sequence[int]
) -> tuple[dict, dict]:
    """(results[problem][strategy][N], seconds[problem][strategy])."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    seconds: dict[str, dict[str, Any]] = {}
    for p in problems:
        for name in dict.fromkeys(r["strategy"] for r in runs if r["problem"] == p):
            ok = [r for r in runs if r["problem"] == p and r["strategy"] == name and not r["error"]]
            if not ok:
                continue
            per = [at_budgets(r, problems[p], budgets) for r in ok]
            res: dict[str, Any] = {}
            for n in map(str, budgets):
                cell = {
                    k: _stats([x[n][k] for x in per])
                    for k in ("best_truth", "regret", "oracle_best_truth", "distinct")
                }
                if all("recommended_truth" in x[n] for x in per):
                    cell["recommended_truth"] = _stats([x[n]["recommended_truth"] for x in per])
                for name_, field_ in (
                    ("kendall_tau", "tau"),
                    ("kendall_tau_random_labels", "tau_random_labels"),
                ):
                    taus = [r[field_].get(n) for r in ok if r.get(field_) is not None]
                    taus = [t for t in taus if t is not None]
                    cell[name_] = _stats(taus) if taus else None
                res[n] = cell
            results.setdefault(p, {})[name] = res
            seconds.setdefault(p, {})[name] = {
                k: _stats([r["seconds"][k] for r in ok])
                for k in ("total", "strategy", "evaluation", "tau")
            }
    return results, seconds


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "min" else a > b


def best_by_mean(
    results: Mapping[str, Any], problems: Mapping[str, rp.Problem], budgets: Sequence[int]
) -> dict:
    out: dict[str, dict[str, Any]] = {}
    for p, by in results.items():
        d = problems[p].direction
        real = {k: v for k, v in by.items() if not SPECS[k].standin}
        for n in map(str, budgets):
            if not real:
                continue
            means = {k: v[n]["best_truth"]["mean"] for k, v in real.items()}
            sign = 1.0 if d == "min" else -1.0
            best = min(means, key=lambda k: sign * means[k])
            out.setdefault(p, {})[n] = {
                "strategy": best,
                "mean_best_truth": means[best],
                "mean_regret": real[best][n]["regret"]["mean"],
                "ranking": sorted(means, key=lambda k: sign * means[k]),
            }
    return out


def claims(
    results: Mapping[str, Any],
    problems: Mapping[str, rp.Problem],
    budgets: Sequence[int],
    subject: str,
    errors: Sequence[str],
) -> dict[str, Any]:
    """The three claims about `subject` (the predictor; see the module doc)."""
    spec = SPECS[subject]
    head: dict[str, Any] = {"subject": subject}
    if spec.standin:
        head["note"] = "stand-in strategy: a check of the code path, NOT a result"
    have = [p for p in results if subject in results[p]]
    if not have:
        return {**head, "evaluated": False, "reason": list(errors)[:5] or "not run"}
    bs = sorted(budgets)
    lo, hi = str(bs[0]), str(bs[-1])
    # (i) improvement with the budget
    imp: dict[str, Any] = {}
    rec_imp: dict[str, Any] = {}  # the same for the ranker's pick among the told archs
    for p in have:
        d = problems[p].direction
        m = [results[p][subject][str(n)]["best_truth"]["mean"] for n in bs]
        cells = [results[p][subject][str(n)] for n in bs]
        if all("recommended_truth" in c for c in cells):
            r = [c["recommended_truth"]["mean"] for c in cells]
            rec_imp[p] = {
                "mean_recommended_truth": dict(zip(map(str, bs), r)),
                f"strictly_improves_{lo}_to_{hi}": _better(r[-1], r[0], d),
                "monotone": all(_better(r[i + 1], r[i], d) for i in range(len(r) - 1)),
            }
        imp[p] = {
            "mean_best_truth": dict(zip(map(str, bs), m)),
            f"strictly_improves_{lo}_to_{hi}": _better(m[-1], m[0], d),
            "monotone": all(_better(m[i + 1], m[i], d) for i in range(len(m) - 1)),
            "truth_oracle_best_by_observed": winners_curse_reference(problems[p], bs),
        }
    # (ii) head to head at N = 50, 100 against tpe and evolution (and their variants)
    rivals = [
        k
        for k in dict.fromkeys(k for p in have for k in results[p])
        if SPECS[k].base in CLAIM_RIVALS and not SPECS[k].standin
    ]
    wins, losses, ties = [], [], []
    for p in have:
        d = problems[p].direction
        for n in (str(b) for b in CLAIM_BUDGETS if b in bs):
            mine = results[p][subject][n]["best_truth"]["mean"]
            for r in rivals:
                if r not in results[p]:
                    continue
                theirs = results[p][r][n]["best_truth"]["mean"]
                row = {"problem": p, "N": int(n), "rival": r, "subject": mine, "rival_mean": theirs}
                (wins if _better(mine, theirs, d) else ties if mine == theirs else losses).append(
                    row
                )
    # (iii) ranking quality at 100 labels on the synthetic problems
    taus: dict[str, Any] = {}
    n_tau = str(TAU_CLAIM_LABELS)
    for p in have:
        if not problems[p].synthetic:
            continue
        cell = results[p][subject].get(n_tau)
        t = cell.get("kendall_tau_random_labels") if cell else None
        taus[p] = {
            "additive_model_ceiling": additive_ceiling(problems[p]),
            f"bayes_reference_{n_tau}_labels": bayes_reference_tau(problems[p], TAU_CLAIM_LABELS),
            "kendall_tau_random_labels": t,
            "kendall_tau_search_labels": cell["kendall_tau"] if cell else None,
            f"at_least_{TAU_TARGET}": None if t is None else bool(t["mean"] >= TAU_TARGET),
        }
    all_tau = [v[f"at_least_{TAU_TARGET}"] for v in taus.values()]
    return {
        **head,
        "evaluated": True,
        "problems": have,
        "i_improves_with_budget": {
            "per_problem": imp,
            f"strictly_{lo}_to_{hi}_on_every_problem": all(
                v[f"strictly_improves_{lo}_to_{hi}"] for v in imp.values()
            ),
            "monotone_on_every_problem": all(v["monotone"] for v in imp.values()),
            "recommended_by_the_ranker": rec_imp or None,
        },
        "ii_beats_tpe_and_evolution": {
            "budgets": [b for b in CLAIM_BUDGETS if b in bs],
            "rivals": rivals,
            "wins": wins,
            "losses": losses,
            "ties": ties,
            "holds_everywhere": bool(wins) and not losses and not ties,
        },
        "iii_tau_at_100_labels": {
            "target": TAU_TARGET,
            "per_problem": taus,
            "holds_on_every_synthetic_problem": (
                None if not all_tau or None in all_tau else all(all_tau)
            ),
        },
    }


def _common_prefix(a: Sequence[float], b: Sequence[float]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def findings(
    specs: Sequence[StrategySpec],
    runs: Sequence[Mapping[str, Any]],
    results: Mapping[str, Any],
    problems: Mapping[str, rp.Problem],
    budgets: Sequence[int],
    seconds: Mapping[str, Any],
    errors: Sequence[str],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    n_min = min(budgets)
    for spec in specs:
        if spec.standin or spec.base not in WARMUP_OPTIONS:
            continue
        opt = WARMUP_OPTIONS[spec.base]
        try:
            warm = int(spec.options.get(opt, base_defaults(spec.base)[opt]))
        except KeyError:
            continue
        if warm >= n_min:
            random_at = [n for n in budgets if n <= warm]
            out.append(
                {
                    "kind": "default_is_random_search_at_small_N",
                    "strategy": spec.name,
                    "option": f"{opt}={warm}" + (" (default)" if opt not in spec.options else ""),
                    "budgets_that_are_random_search": random_at,
                    "text": f"{spec.name}: the first {warm} asks are uniform random "
                    f"({opt}={warm}), so at N = {random_at} it is random search",
                }
            )
    # the same asks as random search, evaluation by evaluation (a shared generator stream)
    rnd = {(r["problem"], r["seed"]): r for r in runs if r["strategy"] == "random"}
    for p in problems:
        for spec in specs:
            if spec.name == "random":
                continue
            same = [
                _common_prefix(r["truth"], rnd[(p, r["seed"])]["truth"])
                for r in runs
                if r["problem"] == p
                and r["strategy"] == spec.name
                and not r["error"]
                and (p, r["seed"]) in rnd
                and not rnd[(p, r["seed"])]["error"]
            ]
            if same and min(same) > 0:
                out.append(
                    {
                        "kind": "identical_to_random_search",
                        "problem": p,
                        "strategy": spec.name,
                        "first_evaluations": min(same),
                        "text": f"{spec.name} asked exactly what random asked for the first "
                        f"{min(same)} evaluations of every seed on {p}",
                    }
                )
    for p, by in results.items():
        if "random" not in by:
            continue
        d = problems[p].direction
        for n in map(str, budgets):
            rnd = by["random"][n]["best_truth"]["mean"]
            worse = [
                k
                for k, v in by.items()
                if k != "random"
                and not SPECS[k].standin
                and _better(rnd, v[n]["best_truth"]["mean"], d)
            ]
            if worse:
                out.append(
                    {"kind": "worse_than_random", "problem": p, "N": int(n), "strategies": worse}
                )
    for p, by in seconds.items():
        for k, v in by.items():
            if v["total"]["mean"] > 60:
                out.append(
                    {
                        "kind": "slow",
                        "problem": p,
                        "strategy": k,
                        "seconds_per_run": v["total"]["mean"],
                        "strategy_seconds_per_run": v["strategy"]["mean"],
                    }
                )
    for p, pr in problems.items():
        if pr.optimum_exact:
            continue
        # an estimated optimum that a strategy beats is a bad estimate: say so
        beat = [
            r["strategy"]
            for r in runs
            if r["problem"] == p
            and not r["error"]
            and min(pr.sign * np.asarray(r["truth"])) < pr.sign * pr.optimum
        ]
        if beat:
            out.append(
                {
                    "kind": "optimum_estimate_beaten",
                    "problem": p,
                    "strategies": sorted(set(beat)),
                    "runs": len(beat),
                }
            )
    if errors:
        out.append({"kind": "errors", "count": len(errors), "first": list(errors)[:5]})
    return out


# -- cache --------------------------------------------------------------------------------------
def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interruption
            continue
        out[rec["key"]] = rec
    return out


def append_cache(path: Path, rec: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


# -- main -----------------------------------------------------------------------------------------
def run(
    problem_names: Sequence[str],
    strategy_names: Sequence[str],
    budgets: Sequence[int],
    seeds: int,
    workers: int = 2,
    cache: Path | None = CACHE,
    claims_for: str = "predictor",
    progress: bool = True,
) -> dict[str, Any]:
    """The benchmark as a JSON-able dict (see the module doc); `runs` holds the traces."""
    t_start = time.perf_counter()
    budgets = tuple(sorted({int(b) for b in budgets}))
    specs = [SPECS[s] for s in strategy_names]
    problems = {p: rp.get_problem(p) for p in problem_names}
    fps = {p: pr.fingerprint() for p, pr in problems.items()}
    sfps = {s.name: strategy_fingerprint(s) for s in specs}
    known = load_cache(cache) if cache is not None else {}
    todo, done = [], []
    for p in problem_names:
        for s in specs:
            for seed in range(seeds):
                key = run_key(p, fps[p], s, sfps[s.name], seed, budgets)
                if key in known and not known[key].get("error"):
                    done.append(known[key])
                else:
                    todo.append((key, (p, s.name, seed, budgets)))
    log.info(
        "%d runs: %d cached, %d to do (%d workers)",
        len(done) + len(todo),
        len(done),
        len(todo),
        workers,
    )
    fresh: list[dict[str, Any]] = []

    def finish(key: str, rec: dict[str, Any]) -> None:
        rec = {
            "key": key,
            "problem_fingerprint": fps[rec["problem"]],
            "strategy_fingerprint": sfps[rec["strategy"]],
            **rec,
        }
        fresh.append(rec)
        if cache is not None and not rec["error"]:
            append_cache(cache, rec)

    bar = tqdm(total=len(todo), desc="runs", disable=not progress)
    if workers <= 1:
        for key, args in todo:
            finish(key, run_one(*args))
            bar.update()
    else:
        # spawn: fresh interpreters that read OMP_NUM_THREADS before torch loads (no forked
        # threads of the parent's torch / OpenMP pools)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futs = {pool.submit(_worker, args): key for key, args in todo}
            for fut in as_completed(futs):
                try:
                    rec = fut.result()
                except Exception as e:  # noqa: BLE001  (a dead worker: record, carry on)
                    p, s, seed, _ = next(a for k, a in todo if k == futs[fut])
                    rec = {"problem": p, "strategy": s, "seed": seed, "error": f"worker: {e!r}"}
                finish(futs[fut], rec)
                bar.update()
    bar.close()
    runs = sorted(
        done + fresh,
        key=lambda r: (
            problem_names.index(r["problem"]),
            strategy_names.index(r["strategy"]),
            r["seed"],
        ),
    )
    errors = [
        f"{r['problem']}/{r['strategy']}/seed {r['seed']}: {r['error']}"
        for r in runs
        if r.get("error")
    ]
    results, seconds = aggregate(runs, problems, budgets)
    doc = {
        "bench": "ranking_benchmark",
        "command": "bench/ranking_benchmark.py " + " ".join(sys.argv[1:]),
        "config": {
            "problems": list(problem_names),
            "strategies": list(strategy_names),
            "budgets": list(budgets),
            "seeds": seeds,
            "holdout_archs_for_tau": HOLDOUT,
            "workers": workers,
            "code_version": CODE_VERSION,
        },
        "fresh_noise_on_repeat": FRESH_REPEATS,
        "protocol": "per (problem, strategy, seed) one run of max(budgets) ask/noisy-evaluate/"
        "tell; at budget N the TRUTH of the best-by-observed arch among the first N "
        "evaluations and its regret |optimum - truth|; stats over seeds (std: ddof 0); "
        "kendall_tau: rank_scores (lower = better) vs truth as a loss on 1000 held-out random "
        "archs, measured on a copy of the strategy after N of its own labels; "
        "kendall_tau_random_labels: the same for a fresh strategy told N uniformly random "
        "archs (the claim (iii) figure: ranking the space from N labels)",
        "problems": {p: {**pr.describe(), "fingerprint": fps[p]} for p, pr in problems.items()},
        "strategies": {
            s.name: {
                **s.as_json(),
                "defaults_of_base": base_defaults(s.base) if s.base in STRATEGIES else None,
                "source_fingerprint": sfps[s.name],
            }
            for s in specs
        },
        "findings": findings(specs, runs, results, problems, budgets, seconds, errors),
        "results": results,
        "best_by_mean": best_by_mean(results, problems, budgets),
        "claims": claims(results, problems, budgets, claims_for, errors)
        if claims_for in SPECS
        else None,
        "seconds_per_run": seconds,
        "errors": errors,
        "cache": {
            "path": str(cache.relative_to(ROOT) if cache and cache.is_relative_to(ROOT) else cache),
            "cached_runs_used": len(done),
            "new_runs": len(fresh),
        },
        "runtime_s": time.perf_counter() - t_start,
        # per run: the per-budget figures; the traces (every observation and truth) stay in
        # the run cache, or in `traces` of this dict (not written: they are megabytes)
        "runs": [_summary(r, problems, budgets) for r in runs],
        "traces": runs,
    }
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=list(rp.PROBLEMS), choices=list(rp.PROBLEMS))
    ap.add_argument(
        "--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=list(SPECS)
    )
    ap.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="processes (1: run inline)")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--cache", default=str(CACHE), help="JSON-lines run cache ('' = none)")
    ap.add_argument(
        "--claims-for",
        default="predictor",
        choices=list(SPECS),
        help="the strategy the claims are about",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # read by numpy / torch when the worker processes import them
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    _init_worker()
    if min(args.budgets) < 1 or args.seeds < 1:
        raise SystemExit("budgets and --seeds must be ≥ 1")
    doc = run(
        args.problems,
        args.strategies,
        args.budgets,
        args.seeds,
        workers=args.workers,
        cache=Path(args.cache) if args.cache else None,
        claims_for=args.claims_for,
        progress=not args.no_progress,
    )
    doc.pop("traces")
    publish(doc, args.out, quiet=("runs",))


if __name__ == "__main__":
    main()
