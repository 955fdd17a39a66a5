"""Real local Ray Tune searches with our strategies over `test_mobile_unet`: the
predictor-guided searcher and Optuna NSGA-II, each as a Tune `Searcher`, every trial a
real supernet evaluation on the digits task in a Ray worker, recorded in the run's store."""

import json
import math
import uuid

import numpy as np
import pytest
from ray_helpers import (
    OBJECTIVES,
    SPACE,
    DigitsEvaluatorFactory,
    StrategyFactory,
    files_naming_strategy_modules,
    kill_tagged,
    ray_env_vars,
)

import search_spaces  # noqa: F401  (registers test_mobile_unet)
from nas.layout import SEARCHER_STATE
from nas.ray_tune import RaySettings, StrategySearcher, init_ray, run_tune
from nas.strategies.base import sample_key
from nas.supernet import get_space

pytestmark = pytest.mark.slow

N_TRIALS = 8
SETTINGS = RaySettings(num_cpus=2, cpus_per_trial=1, max_concurrent=2)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module; its processes are ended after it."""
    import ray

    if ray.is_initialized():  # another module's Ray: init_ray would silently reuse it
        ray.shutdown()
    tag = f"tune-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ray_env_vars(tag).items():
            mp.setenv(k, v)
        init_ray(SETTINGS)
        try:
            yield ray.get_runtime_context().get_node_id()
        finally:
            ray.shutdown()
    kill_tagged(tag)


def _search(run, name):
    searcher = StrategySearcher(StrategyFactory(name), list(OBJECTIVES))
    trials = run_tune(searcher, DigitsEvaluatorFactory(), run, N_TRIALS, SETTINGS, name)
    return trials


def _check_search(run, trials, name, node_id):
    """What every search must leave behind; returns the strategy state Tune saved."""
    # every trial recorded once, and what run_tune returns is the store
    lines = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines() if x]
    ids = [d["id"] for d in lines]
    assert len(ids) == len(set(ids)) == N_TRIALS
    assert sorted(t.id for t in trials) == sorted(ids)
    space = get_space(SPACE).space()
    for t in trials:
        assert t.state == "completed", t.error
        space.validate(t.sample)
        assert math.isfinite(t.metrics["val_loss"]) and t.cost["params"] > 0
        assert t.provenance["strategy"] == name
        assert t.provenance["node_id"] == node_id  # recorded inside the Ray worker
    assert len({t.spec_hash for t in trials}) == N_TRIALS  # distinct architectures
    # Tune's checkpoint of the searcher is our JSON (Tune names it .pkl), equal to the live
    # state the searcher keeps in the run directory, with every ask told
    (tune_copy,) = (run / "ray" / "tune").glob("searcher-state-*.pkl")
    saved = json.loads(tune_copy.read_text())
    live = json.loads((run / SEARCHER_STATE).read_text())
    assert saved["strategy"] == live["strategy"]
    assert saved["strategy"]["n_asked"] == saved["strategy"]["n_told"] == N_TRIALS
    assert saved["pending"] == {} and saved["requeue"] == []
    # nothing of Ray's pickles our strategy object (its module would be named in the pickle)
    assert files_naming_strategy_modules(run / "ray") == []
    # and the JSON rebuilds the strategy
    StrategyFactory(name)().load_state_dict(saved["strategy"])
    return saved["strategy"]


def test_predictor_guided_search_runs_through_tune(local_ray, tmp_path):
    run = tmp_path / "run"
    trials = _search(run, "predictor")
    state = _check_search(run, trials, "predictor", local_ray)
    # every evaluated architecture is one the strategy asked, and the strong labels it
    # learns from are the trials' losses, as the Ray workers reported them
    space = get_space(SPACE).space()
    labelled = {space.freeze(s).hash: v for s, v in state["labelled"]}
    assert labelled == {t.spec_hash: pytest.approx(t.metrics["val_loss"]) for t in trials}
    assert {sample_key(space.canonical(t.sample)) for t in trials} <= set(state["asked"])


def test_optuna_nsga2_search_runs_through_tune(local_ray, tmp_path):
    run = tmp_path / "run"
    trials = _search(run, "nsga2")
    state = _check_search(run, trials, "nsga2", local_ray)
    # the study was told each trial's (val_loss, params) as reported by the Ray workers
    tells = [ev for ev in state["events"] if ev[0] == "tell"]
    assert all(ev[2] == "complete" for ev in tells)
    told = sorted(tuple(ev[3]) for ev in tells)
    measured = sorted((t.metrics["val_loss"], t.cost["params"]) for t in trials)
    np.testing.assert_allclose(told, measured, rtol=1e-12)


def test_nan_trials_fail_stop_the_search_and_a_resume_retries_them(local_ray, tmp_path):
    from nas.layout import RETIRED_TRIALS
    from nas.ray_tune import RepeatedFailureError
    from nas.trials import TrialStore

    run = tmp_path / "run"
    searcher = StrategySearcher(StrategyFactory("random"), list(OBJECTIVES))
    with pytest.raises(RepeatedFailureError, match=r"[34] trials in a row failed with") as e:
        run_tune(searcher, DigitsEvaluatorFactory(diverged=True), run, N_TRIALS, SETTINGS, "random")
    assert "non-finite metrics" in str(e.value) and "--resume" in str(e.value)
    failed = TrialStore(run).trials()
    # stopped early: the streak, plus what was already running when it tripped
    assert 3 <= len(failed) < N_TRIALS
    assert {t.state for t in failed} == {"failed"}
    assert all("non-finite metrics {'val_loss': nan}" in t.error for t in failed)

    # keeping the failures: they count as done, the rest of the budget runs
    kept = run_tune(
        StrategySearcher(StrategyFactory("random"), list(OBJECTIVES)),
        DigitsEvaluatorFactory(),
        run,
        len(failed) + 1,
        SETTINGS,
        "random",
        resume=True,
        retry_failed=False,
    )
    assert [t.state for t in kept] == ["failed"] * len(failed) + ["completed"]

    # retrying them: their samples run again first, their records move aside
    trials = run_tune(
        StrategySearcher(StrategyFactory("random"), list(OBJECTIVES)),
        DigitsEvaluatorFactory(),
        run,
        N_TRIALS,
        SETTINGS,
        "random",
        resume=True,
    )
    assert len(trials) == N_TRIALS and {t.state for t in trials} == {"completed"}
    assert {t.spec_hash for t in failed} <= {t.spec_hash for t in trials}
    retired = [json.loads(x) for x in (run / RETIRED_TRIALS).read_text().splitlines() if x]
    assert sorted(d["id"] for d in retired) == sorted(t.id for t in failed)
