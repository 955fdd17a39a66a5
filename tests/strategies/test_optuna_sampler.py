"""`StrategySampler`: mqnas strategies driving plain Optuna studies and Ray Tune's OptunaSearch."""

from __future__ import annotations

import functools
import json
import logging
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.errors import ConfigError
from nas.space import SearchSpace, sample_from_json
from nas.strategies import make_strategy
from nas.strategies.optuna_sampler import (
    SAMPLE_ATTR,
    StrategySampler,
    label_distributions,
    params_to_sample,
    sample_to_params,
    suggest_sample,
)
from predictors.testing import small_predictor_guided

# a user's own space; "flag" mixes option types (1 and True), so its param is an index
SPACE = SearchSpace.from_choices(
    {
        "op": ["conv3", "conv5", "skip"],
        "width": [8, 16, 32, 64],
        "ratio": [0.25, 0.5, 1.0],
        "flag": [0, 1, True],
    },
    name="sampler_toy",
)
# a sum of per-label scores over a space Optuna holds natively: the optimum is known
NATIVE = SearchSpace.from_choices(
    {f"x{i}": list(range(6)) for i in range(5)} | {"act": ["relu", "gelu", "silu"]},
    name="sampler_sum",
)
_rng = np.random.default_rng(123)
SCORES = {lab: _rng.permutation(len(c)).astype(float) for lab, c in NATIVE.items()}
OPTIMUM = sum(float(s.max()) for s in SCORES.values())
RANDOM_MEAN = sum(float(s.mean()) for s in SCORES.values())


def score(sample) -> float:
    return sum(SCORES[lab][NATIVE[lab].index(v)] for lab, v in sample.items())


def toy_score(sample) -> float:
    x = SPACE.encode([sample], "ordinal")[0]
    return float(x @ np.array([1.0, 2.0, -1.0, 0.5]))


def evolution(space, objectives, seed=0):
    return make_strategy("evolution", space, objectives, seed, population_size=8)


BUILDERS = {"evolution": evolution, "predictor": small_predictor_guided}


@pytest.fixture(autouse=True)
def quiet_optuna():
    """Optuna logs every trial at INFO."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(before)


def spy_tells(strategy) -> list:
    """Record every (sample, metrics) the strategy is told, then tell it."""
    told = []
    tell = strategy.tell

    def recording(sample, metrics):
        told.append((dict(sample), None if metrics is None else dict(metrics)))
        tell(sample, metrics)

    strategy.tell = recording
    return told


def trial_sample(trial) -> dict:
    return sample_from_json(trial.system_attrs[SAMPLE_ATTR])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_study_runs_every_trial_through_the_strategy(name):
    st = BUILDERS[name](SPACE, {"score": "max"}, 0)
    told = spy_tells(st)

    def objective(trial):
        s = suggest_sample(trial, SPACE)
        if trial.number % 7 == 3:
            raise RuntimeError("evaluation crashed")
        return toy_score(s)

    study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
    study.optimize(objective, n_trials=30, catch=(RuntimeError,))

    states = [t.state for t in study.trials]
    assert len(states) == 30 and states.count(TrialState.FAIL) == 4
    assert st.n_asked == 30
    assert st.n_told == states.count(TrialState.COMPLETE) + states.count(TrialState.FAIL)
    dists = label_distributions(SPACE)
    for t, (s, metrics) in zip(study.trials, told):
        assert t.distributions == dists
        sample = params_to_sample(SPACE, t.params)
        assert SPACE.canonical(sample) == sample == trial_sample(t) == s
        assert t.params["flag"] in (0, 1, 2)  # mixed option types: an option index
        assert {k: t.params[k] for k in ("op", "width", "ratio")} == {
            k: sample[k] for k in ("op", "width", "ratio")
        }
        assert metrics == (None if t.state == TrialState.FAIL else {"score": t.value})
    assert len({json.dumps(s) for s, _ in told}) > 10


def test_evolution_through_the_sampler_beats_random_sampling():
    def objective(trial):  # the user's own suggestions, not suggest_sample
        return score({lab: trial.suggest_categorical(lab, c.options) for lab, c in NATIVE.items()})

    for seed in (0, 1, 2):
        st = evolution(NATIVE, {"score": "max"}, seed)
        study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
        study.optimize(objective, n_trials=40)
        rand = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize"
        )
        rand.optimize(objective, n_trials=40)
        rand_mean = np.mean([t.value for t in rand.trials])
        late = np.mean([t.value for t in study.trials[20:]])  # mutations of the told best
        assert abs(rand_mean - RANDOM_MEAN) < 3  # the baseline is random sampling indeed
        assert study.best_value > max(t.value for t in rand.trials) - 1
        assert late > rand_mean + 0.25 * (OPTIMUM - RANDOM_MEAN), (seed, late, rand_mean)


def test_failed_and_pruned_trials_are_told_none_and_the_study_carries_on():
    st = evolution(SPACE, {"score": "max"}, 3)
    told = spy_tells(st)

    def objective(trial):
        s = suggest_sample(trial, SPACE)
        if s["op"] == "skip":
            raise ValueError("skip is not evaluable")
        if s["flag"] is True:
            raise optuna.TrialPruned()
        return toy_score(s)

    study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
    study.optimize(objective, n_trials=24, catch=(ValueError,))
    by_state = {
        state: [t for t in study.trials if t.state == state]
        for state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    }
    assert all(by_state.values()) and sum(map(len, by_state.values())) == 24
    assert st.n_told == 24
    for t, (s, metrics) in zip(study.trials, told):
        assert s == trial_sample(t)
        assert (metrics is None) == (t.state != TrialState.COMPLETE)
    # failures never enter the population: what evolution keeps completed
    complete = [trial_sample(t) for t in by_state[TrialState.COMPLETE]]
    assert all(m[0] in complete for m in st.population)


def test_a_two_objective_study_tells_both_values_in_order():
    st = evolution(SPACE, {"a": "min", "b": "max"}, 0)
    told = spy_tells(st)

    def objective(trial):
        x = SPACE.encode([suggest_sample(trial, SPACE)], "ordinal")[0]
        return float(x.sum()), float(x[0] - x[1])

    study = optuna.create_study(sampler=StrategySampler(st), directions=["minimize", "maximize"])
    study.optimize(objective, n_trials=20)
    assert st.n_told == 20
    assert [m for _, m in told] == [{"a": t.values[0], "b": t.values[1]} for t in study.trials]
    assert study.best_trials  # Optuna's own front of the values it stored


@pytest.mark.parametrize(
    ("objectives", "kw", "fix"),
    [
        ({"acc": "max"}, {"direction": "minimize"}, r"directions=\['maximize'\]"),
        ({"a": "min", "b": "max"}, {"direction": "minimize"}, r"\['minimize', 'maximize'\]"),
        (
            {"a": "min", "b": "max"},
            {"directions": ["maximize", "minimize"]},
            r"\['minimize', 'maximize'\]",
        ),
    ],
)
def test_directions_that_do_not_match_the_objectives_are_refused(objectives, kw, fix):
    st = evolution(SPACE, objectives, 0)
    study = optuna.create_study(sampler=StrategySampler(st), **kw)
    with pytest.raises(ConfigError, match=rf"study's directions .* objectives .*{fix}") as e:
        study.optimize(lambda t: 0.0, n_trials=1)
    assert all(o in str(e.value) for o in objectives)
    assert st.n_asked == 0
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # not left RUNNING


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_same_seed_gives_the_same_params(name):
    def params(seed):
        sampler = StrategySampler(BUILDERS[name](SPACE, {"score": "max"}, seed))
        study = optuna.create_study(sampler=sampler, direction="maximize")
        # "lr" is no label: the sampler's seeded RandomSampler draws it
        study.optimize(
            lambda t: toy_score(suggest_sample(t, SPACE)) + t.suggest_float("lr", 0, 1e-3),
            n_trials=16,
        )
        return [t.params for t in study.trials]

    a, b, c = params(5), params(5), params(6)
    assert a == b
    assert a != c
    assert len({p["lr"] for p in a}) == 16


def test_enqueued_trials_and_unsuggested_labels():
    st = evolution(SPACE, {"score": "max"}, 0)
    told = spy_tells(st)
    study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
    fixed = {"op": "skip", "width": 64, "ratio": 1.0, "flag": True}
    study.enqueue_trial(sample_to_params(SPACE, fixed))  # every label: told, never asked
    study.enqueue_trial({"width": 8})  # one label: asked, told with the fixed width
    study.optimize(lambda t: t.suggest_categorical("width", (8, 16, 32, 64)) / 64, n_trials=3)
    assert st.n_asked == 2 and st.n_told == 3
    assert told[0] == (fixed, {"score": 1.0})
    assert told[1][0]["width"] == 8 and told[1][1] == {"score": 8 / 64}
    # the labels the objective never suggested count with their asked values
    assert told[2][0] == trial_sample(study.trials[2])


def test_params_that_are_no_label_are_drawn_at_random_and_logged_once(caplog):
    st = evolution(SPACE, {"score": "max"}, 0)
    study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
    with caplog.at_level(logging.INFO, logger="nas.strategies.optuna_sampler"):
        study.optimize(
            lambda t: toy_score(suggest_sample(t, SPACE)) * t.suggest_float("lr", 1, 2), 5
        )
    assert [r.getMessage() for r in caplog.records].count(
        "StrategySampler: param 'lr' is not a label of space 'sampler_toy'; Optuna's "
        "RandomSampler (seeded from the strategy's seed) draws it"
    ) == 1
    assert all(1 <= t.params["lr"] <= 2 for t in study.trials)


def test_a_label_suggested_with_other_choices_fails_the_trial():
    st = evolution(SPACE, {"score": "max"}, 0)
    study = optuna.create_study(sampler=StrategySampler(st), direction="maximize")
    reordered = ("conv5", "conv3", "skip")
    study.optimize(lambda t: len(t.suggest_categorical("op", reordered)), 2, catch=(ValueError,))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2  # Optuna's own refusal
    assert st.n_told == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: StrategySampler(evolution(SPACE, {"score": "max"}, 0)),  # pickled as itself
        # the ranker's weak label is a lambda: pickled as the factory and the JSON state
        lambda: StrategySampler(
            functools.partial(small_predictor_guided, SPACE, {"score": "max"}, 0)
        ),
    ],
    ids=["strategy", "factory"],
)
def test_the_sampler_pickles_with_its_strategy(make):
    sampler = make()
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: toy_score(suggest_sample(t, SPACE)) + t.suggest_float("lr", 0, 1), 6)
    copy = pickle.loads(pickle.dumps(sampler))  # what Ray Tune's OptunaSearch.save does
    assert json.dumps(copy.strategy.state_dict()) == json.dumps(sampler.strategy.state_dict())
    assert [copy.strategy.ask() for _ in range(3)] == [sampler.strategy.ask() for _ in range(3)]
    rand = optuna.distributions.FloatDistribution(0, 1)
    draw = [s.sample_independent(study, study.trials[0], "lr", rand) for s in (copy, sampler)]
    assert draw[0] == draw[1]


def test_a_strategy_that_does_not_pickle_is_refused_naming_the_fix():
    sampler = StrategySampler(small_predictor_guided(SPACE, {"score": "max"}, 0))
    with pytest.raises(ConfigError, match=r"cannot pickle .*StrategySampler\(functools.partial"):
        pickle.dumps(sampler)


def test_a_foreign_object_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match="make_strategy"):
        StrategySampler(optuna.samplers.TPESampler())
    with pytest.raises(ConfigError, match="factory without arguments"):
        StrategySampler(type(evolution(SPACE, "a")))


def test_nas_strategies_exports_the_sampler_without_importing_optuna():
    code = (
        "import sys, nas.strategies as s; assert 'optuna' not in sys.modules; "
        "from nas.strategies.optuna_sampler import StrategySampler; "
        "assert s.StrategySampler is StrategySampler"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- Ray Tune -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (1 CPU); the processes it starts are ended after it (see ray_helpers)."""
    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
    from ray_helpers import kill_tagged, ray_env_vars

    from nas.ray_tune import RaySettings, init_ray

    if ray.is_initialized():
        ray.shutdown()
    tag = f"sampler-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ray_env_vars(tag).items():
            mp.setenv(k, v)
        init_ray(RaySettings(num_cpus=1, cpus_per_trial=1, max_concurrent=1))
        try:
            yield
        finally:
            ray.shutdown()
    kill_tagged(tag)


@pytest.mark.slow
def test_ray_tune_optuna_search_takes_the_sampler(local_ray, tmp_path):
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    weights = {lab: s.tolist() for lab, s in SCORES.items()}
    options = {lab: list(c.options) for lab, c in NATIVE.items()}

    def trainable(config):  # pickled by value to the worker: nothing from this module
        s = sum(weights[lab][options[lab].index(config[lab])] for lab in weights)
        tune.report({"score": float(s)})

    # the predictor-guided strategy; a factory, as Tune pickles the searcher (see the module)
    sampler = StrategySampler(
        functools.partial(small_predictor_guided, NATIVE, {"score": "max"}, 0)
    )
    tuner = tune.Tuner(
        trainable,
        param_space={lab: tune.choice(opts) for lab, opts in options.items()},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(sampler=sampler, metric="score", mode="max"),
            num_samples=6,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == 6
    samples = [params_to_sample(NATIVE, r.config) for r in results]
    for r, s in zip(results, samples):
        assert r.metrics["score"] == score(s)
    st = sampler.strategy
    assert st.n_asked == st.n_told == 6
    # the strong labels it learns from are the scores the Ray workers reported
    assert sorted(v for _, v in st.labelled.values()) == sorted(r.metrics["score"] for r in results)
    assert sorted(json.dumps(s) for s, _ in st.labelled.values()) == sorted(
        map(json.dumps, samples)
    )
    assert list(tmp_path.rglob("searcher-state-*.pkl"))  # Tune did checkpoint the sampler
