"""The known-truth search problems of `bench/ranking_problems.py` and a tiny end-to-end run of
`bench/ranking_benchmark.py` (one problem, two strategies, budgets 10 and 20, two seeds)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # the benches import their siblings as scripts do
import ranking_benchmark as rb
import ranking_problems as rp

SYNTHETIC = list(rp.SYNTHETIC)
#: the documented range of the weak label's Spearman ρ with the truth (both lower = better)
WEAK_RHO = (0.3, 0.6)


def random_samples(problem: rp.Problem, n: int, seed: int) -> list[dict]:
    return problem.space.sample_many(n, rng=seed)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_optimum_bounds_the_truth_of_random_archs(name):
    p = rp.get_problem(name)
    t = p.truth(random_samples(p, 5000, 0))
    if p.direction == "max":
        assert p.optimum >= t.max()
    else:
        assert p.optimum <= t.min()
    assert p.optimum_exact
    assert np.all(np.asarray(p.regret(t)) >= 0)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_truth_is_deterministic_and_rebuilt_identically(name):
    p = rp.get_problem(name)
    s = random_samples(p, 300, 1)
    again = rp.PROBLEMS[name]()  # a fresh build (another process builds it the same way)
    np.testing.assert_array_equal(p.truth(s), p.truth(s))
    np.testing.assert_array_equal(p.truth(s), again.truth(s))
    assert again.optimum == p.optimum
    assert again.fingerprint() == p.fingerprint()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_noise_has_the_documented_scale(name):
    p = rp.get_problem(name)
    s = random_samples(p, 1, 2) * 20_000
    eps = p.noisy(s, np.random.default_rng(3)) - p.truth(s)
    noise = p.describe()["noise"]
    assert abs(np.median(eps)) < 0.05 * noise["scale"]  # centred on the truth
    if noise["kind"] == "student_t":
        # the IQR: the t's std converges too slowly with df = 3 (infinite 4th moment)
        iqr = np.subtract(*np.quantile(eps, [0.75, 0.25]))
        scale = iqr / (2 * student_t.ppf(0.75, noise["df"]))
        assert scale == pytest.approx(noise["scale"], rel=0.05)
        assert noise["std"] == pytest.approx(noise["scale"] * np.sqrt(3.0))
    else:
        assert eps.std() == pytest.approx(noise["std"], rel=0.05)
    # a different generator, a different observation; the same one, the same observation
    a = p.noisy(s[:5], np.random.default_rng(4))
    assert np.array_equal(a, p.noisy(s[:5], np.random.default_rng(4)))
    assert not np.array_equal(a, p.noisy(s[:5], np.random.default_rng(5)))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_weak_label_correlates_with_the_truth_in_the_documented_range(name):
    p = rp.get_problem(name)
    d = p.describe()
    lo, hi = WEAK_RHO
    assert lo <= d["weak_truth_spearman"] <= hi
    w = p.weak(random_samples(p, 10, 6))
    assert w.shape == (10, len(p.weak_columns))


def test_describe_is_json_and_its_fingerprint_follows_the_definition():
    p = rp.get_problem("cell201")
    d = p.describe()
    for key in ("labels", "size", "noise", "optimum", "weak_truth_spearman", "code_version"):
        assert key in d
    assert d["size"] == 5**6
    json.dumps(d)
    changed = dataclasses.replace(p, optimum=p.optimum + 1.0)
    assert changed.fingerprint() != p.fingerprint()


def test_variable_elimination_is_exact_on_a_small_factor_graph():
    rng = np.random.default_rng(7)
    cards = [3, 2, 4, 3, 2]
    factors = [((i,), rng.normal(size=c)) for i, c in enumerate(cards)]
    for a, b in [(0, 1), (1, 2), (2, 3), (0, 3), (3, 4)]:
        factors.append(((a, b), rng.normal(size=(cards[a], cards[b]))))
    factors.append(((4, 0, 2), rng.normal(size=(cards[4], cards[0], cards[2]))))
    every = np.array(list(itertools.product(*[range(c) for c in cards])))
    brute = rp.factor_value(factors, every).min()
    assert rp.exact_min(factors, cards) == pytest.approx(brute, abs=1e-12)


def test_cell201_scales_connected_cells_like_accuracy():
    p = rp.get_problem("cell201")
    every = rp.enumerate_index(p.space)
    t = p.truth_index(every)
    assert t.max() == pytest.approx(94.0) == p.optimum
    assert t[t > rp.CELL_CHANCE].min() == pytest.approx(85.0)
    cut = {lab: "none" for lab in p.space.labels}
    assert p.truth([cut])[0] == rp.CELL_CHANCE


def test_tiny_benchmark_end_to_end(tmp_path):
    cache = tmp_path / "runs.jsonl"
    args = (["cell201"], ["random", "evolution(pop=12,S=4)"], [10, 20], 2)
    doc = rb.run(*args, workers=1, cache=cache, progress=False)
    json.dumps(doc)
    for key in (
        "bench",
        "config",
        "problems",
        "strategies",
        "findings",
        "results",
        "best_by_mean",
        "claims",
        "seconds_per_run",
        "errors",
        "cache",
        "runs",
        "traces",
    ):
        assert key in doc
    assert doc["errors"] == []
    assert doc["claims"]["evaluated"] is False  # no predictor in this run
    p = rp.get_problem("cell201")
    cell = doc["results"]["cell201"]["random"]["20"]
    for key in ("best_truth", "regret", "oracle_best_truth", "distinct"):
        assert set(cell[key]) == {"mean", "std", "median", "n"}
        assert cell[key]["n"] == 2
    assert cell["kendall_tau"] is None  # random search has no rank_scores
    assert set(doc["best_by_mean"]["cell201"]) == {"10", "20"}
    assert set(doc["seconds_per_run"]["cell201"]) == {"random", "evolution(pop=12,S=4)"}
    # evolution's first population_size asks are random search's (one generator stream)
    same = [f for f in doc["findings"] if f["kind"] == "identical_to_random_search"]
    assert same and same[0]["first_evaluations"] == 12
    assert len(doc["runs"]) == len(doc["traces"]) == 4
    assert set(doc["runs"][0]["at_budget"]) == {"10", "20"}
    for r in doc["traces"]:
        assert len(r["observed"]) == len(r["truth"]) == 20
        per = rb.at_budgets(r, p, [10, 20])
        loss_obs = [p.sign * per[n]["observed_best"] for n in ("10", "20")]
        loss_oracle = [p.sign * per[n]["oracle_best_truth"] for n in ("10", "20")]
        assert loss_obs[1] <= loss_obs[0]  # the best observation only improves with N
        assert loss_oracle[1] <= loss_oracle[0]
        for n in ("10", "20"):
            assert per[n]["regret"] >= 0  # an exact optimum: no arch beats it
            assert p.sign * per[n]["oracle_best_truth"] <= p.sign * per[n]["best_truth"]
            assert per[n]["distinct"] <= int(n)
            # the best truth is the truth of the best-by-observed arch
            b = int(np.argmin(p.sign * np.asarray(r["observed"][: int(n)])))
            assert per[n]["best_truth"] == r["truth"][b]
    # resumed: every run comes from the cache, with the same numbers
    again = rb.run(*args, workers=1, cache=cache, progress=False)
    assert again["cache"] == {**doc["cache"], "cached_runs_used": 4, "new_runs": 0}
    assert again["results"] == doc["results"]
    # a changed problem definition invalidates its cached runs
    keys = {json.loads(line)["key"] for line in cache.read_text().splitlines()}
    spec = rb.SPECS["random"]
    sfp = rb.strategy_fingerprint(spec)
    assert rb.run_key("cell201", p.fingerprint(), spec, sfp, 0, (10, 20)) in keys
    fp = dataclasses.replace(p, optimum=p.optimum + 1).fingerprint()
    assert rb.run_key("cell201", fp, spec, sfp, 0, (10, 20)) not in keys


def test_a_ranking_strategy_gets_kendall_tau_and_never_counts_as_a_result():
    # the stand-in predictor: the rank_scores code path, fast
    doc = rb.run(
        ["cell201"],
        ["random", "predictor-standin"],
        [6, 12],
        1,
        workers=1,
        cache=None,
        claims_for="predictor-standin",
        progress=False,
    )
    assert doc["errors"] == []
    by = doc["results"]["cell201"]["predictor-standin"]
    for kind in ("kendall_tau", "kendall_tau_random_labels"):
        taus = [by[n][kind] for n in ("6", "12")]
        assert all(t is not None and -1 <= t["mean"] <= 1 for t in taus), kind
    # the ranker's pick among the told archs is one of them: its truth is a told truth
    (trace,) = [r for r in doc["traces"] if r["strategy"] == "predictor-standin"]
    assert set(trace["recommended_truth"]) == {"6", "12"}
    assert trace["recommended_truth"]["12"] in trace["truth"][:12]
    assert "recommended_truth" in by["12"]
    assert doc["claims"]["note"].startswith("stand-in")
    assert doc["claims"]["evaluated"] is True
    assert all(v["strategy"] == "random" for v in doc["best_by_mean"]["cell201"].values())


def test_digits_features_see_architectures_not_unused_labels():
    # the surrogate's structural features canonicalize in numpy what the space's
    # canonicalize does per sample: a sample and its canonical form are one architecture
    import search_spaces  # noqa: F401  (registers mobile_unet)
    from nas import get_space

    space = get_space("mobile_unet").space()
    struct, canonical_struct = rp._digits_structure(space)
    samples = space.sample_many(500, rng=8)
    fast = canonical_struct(space.encode(samples, kind="index"))
    slow = space.encode([space.canonical(s) for s in samples], kind="index")[:, struct]
    np.testing.assert_array_equal(fast, slow)
    assert len(struct) == 30


def test_the_bayes_reference_learns_with_labels_and_knowing_the_interactions_helps():
    """The posterior mean under wide_interactions' own prior: better with more labels, better
    when told which labels interact, and most of the order at 400 labels; a problem whose
    truth is not drawn from a factor prior has none."""
    wide = rp.get_problem("wide_interactions")
    few = rb.bayes_reference_tau(wide, 30, seeds=2)
    many = rb.bayes_reference_tau(wide, 400, seeds=2)
    assert few["interactions_known"] < many["interactions_known"]
    assert few["interactions_unknown"] < many["interactions_unknown"]
    assert many["interactions_unknown"] < many["interactions_known"]
    assert many["interactions_known"] > 0.8
    assert rb.bayes_reference_tau(rp.get_problem("mixed_cardinality"), 30) is None


def test_the_wide_prior_names_the_truths_factors():
    """Problem.prior is what the truth was drawn from: every label's main effect (the
    dominant ones at sd 1), the pairs and the triple that ``extra`` names."""
    wide = rp.get_problem("wide_interactions")
    pairs = [tuple(p) for p in wide.extra["pairs"]]
    assert [s for s, _ in wide.prior] == (
        [(i,) for i in range(12)] + pairs + [tuple(wide.extra["triple"])]
    )
    assert [i for i in range(12) if dict(wide.prior)[(i,)] == 1.0] == list(rp.WIDE_DOMINANT)


def test_the_winners_curse_reference_falls_with_the_budget_under_heavy_tailed_noise():
    """A strategy that knows the truth and asks the N best cells: the truth of its
    best-by-observed cell is worse at N = 200 than at N = 10 (Student-t noise lets a lesser
    cell draw the best observation), and a space too large to enumerate has none."""
    cell = rp.get_problem("cell201")
    ref = rb.winners_curse_reference(cell, (10, 200), draws=100)
    assert cell.optimum >= ref["10"] > ref["200"]
    assert rb.winners_curse_reference(rp.get_problem("wide_interactions"), (10,)) is None
