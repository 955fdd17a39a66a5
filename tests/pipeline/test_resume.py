"""Interrupt a search with SIGKILL (driver, Ray and all) and resume it: nothing finished is
evaluated again, the interrupted trials run again, and the run reaches its trial count.

Semantics (nas/ray_tune.py): the run's `trials.jsonl` is the record — a trial is
finished iff its record is there. Tune itself would restart its unfinished trials from
its own experiment state, which lags behind after a crash; our resume instead restores
the searcher's JSON state, tells it the records it had not seen, hands out the samples
that were running again, and runs the trials the store lacks."""

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pipeline_helpers import run_cmd, run_dirs, smoke_config
from ray_helpers import (
    OBJECTIVES,
    StrategyFactory,
    files_naming_strategy_modules,
    kill_session,
    kill_tagged,
    start_session,
    store_records,
    wait_for,
    worker_env,
)

import search_spaces  # noqa: F401  (registers test_mobile_unet)
from nas.errors import ConfigError
from nas.layout import SEARCHER_STATE
from nas.ray_tune import RaySettings, StrategySearcher, run_tune
from nas.supernet import get_space
from nas.trials import Trial, TrialStore

N_TRIALS = 6
DRIVER = """
import sys
from pathlib import Path

from ray_helpers import OBJECTIVES, DigitsEvaluatorFactory, StrategyFactory

from nas.ray_tune import RaySettings, StrategySearcher, run_tune

run, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
searcher = StrategySearcher(StrategyFactory("nsga2"), list(OBJECTIVES))
settings = RaySettings(num_cpus=2, cpus_per_trial=1, max_concurrent=2)
# a one-second pause per evaluation: the kill lands while trials are running
run_tune(searcher, DigitsEvaluatorFactory(pause_s=1.0), run, {n}, settings, "nsga2", resume=resume)
"""


@pytest.fixture
def tag():
    """The environment tag of every process a test starts; all of them end with the test."""
    t = f"resume-{uuid.uuid4().hex[:8]}"
    yield t
    kill_tagged(t)


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return run_cmd(cmd, env=env, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_a_killed_search_resumes_without_evaluating_anything_twice(tmp_path, tag):
    run = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(n=N_TRIALS))
    env = worker_env(tag)
    proc = start_session(
        [sys.executable, str(driver), str(run), "new"], env, tmp_path / "first.log"
    )
    try:
        wait_for(lambda: len(store_records(run)) >= 3 or proc.poll() is not None, 600, "3 trials")
    finally:
        kill_session(proc, tag)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    before = {d["id"]: d for d in store_records(run)}
    assert 3 <= len(before) < N_TRIALS
    # what was running when it died: handed out (pending) but never stored
    state = json.loads((run / SEARCHER_STATE).read_text())
    space = get_space("test_mobile_unet").space()
    interrupted = {space.freeze(s).hash for i, s in state["pending"].items() if i not in before}
    assert interrupted

    r = _run([sys.executable, str(driver), str(run), "resume"], env, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    records = store_records(run)
    ids = [d["id"] for d in records]
    # every trial once: the finished ones kept byte for byte (not re-evaluated, not
    # appended again), the store complete
    assert len(ids) == len(set(ids)) == N_TRIALS
    after = {d["id"]: d for d in records}
    assert all(after[i] == d for i, d in before.items())
    assert all(d["state"] == "completed" for d in records)
    # the interrupted samples ran again, in the resumed session; no architecture twice
    new = [d for i, d in after.items() if i not in before]
    assert interrupted <= {d["spec_hash"] for d in new}
    assert len({d["spec_hash"] for d in records}) == N_TRIALS
    # the strategy asked exactly N_TRIALS samples and was told each once
    final = json.loads((run / SEARCHER_STATE).read_text())
    assert final["strategy"]["n_asked"] == final["strategy"]["n_told"] == N_TRIALS
    assert final["pending"] == {} and final["requeue"] == []
    tells = [ev for ev in final["strategy"]["events"] if ev[0] == "tell"]
    told = sorted(tuple(ev[3]) for ev in tells)
    assert told == sorted((d["metrics"]["val_loss"], d["cost"]["params"]) for d in records)
    # the resumed session is a Tune experiment of its own beside the first one; Ray's
    # pickles of the restored searcher hold its JSON state, not the strategy object
    assert (run / "ray" / "tune").is_dir() and (run / "ray" / "tune-1").is_dir()
    assert files_naming_strategy_modules(run / "ray") == []


@pytest.mark.slow
def test_nas_search_killed_mid_search_then_resumed_writes_its_report(tmp_path, tag):
    cfg = smoke_config(tmp_path, num_trials=6)
    env = worker_env(tag)
    cli = [sys.executable, "-m", "nas.app.cli", "search"]
    proc = start_session([*cli, str(cfg), "-q"], env, tmp_path / "first.log")
    try:

        def two_trials() -> bool:
            runs = run_dirs(tmp_path)
            return proc.poll() is not None or bool(runs and len(store_records(runs[0])) >= 2)

        wait_for(two_trials, 600, "2 trials of `nas search`")
    finally:
        kill_session(proc, tag)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    (run,) = run_dirs(tmp_path)
    before = {d["id"]: d for d in store_records(run)}
    assert 2 <= len(before) < 6 and not (run / "report.md").exists()

    r = _run([*cli, "--resume", str(run), "-q"], env, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    report = run / "report.md"
    assert f"report: {report.relative_to(tmp_path)}" in r.stdout and report.is_file()
    records = store_records(run)
    ids = [d["id"] for d in records]
    assert len(ids) == len(set(ids)) == 6
    after = {d["id"]: d for d in records}
    assert all(after[i] == d for i, d in before.items())
    assert "(6 trials," in r.stdout


# -- the reconciliation itself, without Ray (each crash window made on purpose) ----------------
def _stored(trial_id: str, sample: dict, val_loss: float, params: float) -> Trial:
    space = get_space("test_mobile_unet").space()
    return Trial(
        id=trial_id,
        sample=sample,
        spec_hash=space.freeze(sample).hash,
        metrics={"val_loss": val_loss},
        cost={"params": params},
        state="completed",
        timings={},
        provenance={},
    )


def test_resume_tells_stored_pending_trials_and_hands_out_the_running_ones_again(tmp_path):
    state = tmp_path / SEARCHER_STATE
    first = StrategySearcher(StrategyFactory("nsga2"), list(OBJECTIVES), state_path=state)
    handed = [json.loads(first.suggest(f"t{i}")["sample"]) for i in range(3)]
    # the crash: t0's record reached the store, its tell never reached the saved state
    again = StrategySearcher(StrategyFactory("nsga2"), list(OBJECTIVES), state_path=state)
    again.resume([_stored("t0", handed[0], 0.5, 1000.0)])
    st = json.loads(state.read_text())  # persisted at once
    assert st["pending"] == {} and st["requeue"] == handed[1:]
    assert (st["strategy"]["n_asked"], st["strategy"]["n_told"]) == (3, 1)
    assert [ev[3] for ev in st["strategy"]["events"] if ev[0] == "tell"] == [[0.5, 1000.0]]
    # the interrupted samples come first, then the strategy asks again
    assert [json.loads(again.suggest(f"u{i}")["sample"]) for i in range(2)] == handed[1:]
    again.suggest("u2")
    assert again.get_state()["strategy"]["n_asked"] == 4


def test_resume_without_a_saved_state_warm_starts_from_the_store(tmp_path):
    space = get_space("test_mobile_unet").space()
    old = [_stored(f"o{i}", dict(s), 1.0 + i, 5e4) for i, s in enumerate(space.sample_many(3, 0))]
    s = StrategySearcher(
        StrategyFactory("nsga2"), list(OBJECTIVES), state_path=tmp_path / SEARCHER_STATE
    )
    s.resume(old)
    st = s.get_state()["strategy"]
    assert st["n_told"] == 3 and [ev[0] for ev in st["events"]] == ["add"] * 3


def test_a_new_search_refuses_a_run_that_already_holds_trials(tmp_path):
    space = get_space("test_mobile_unet").space()
    TrialStore(tmp_path).append(_stored("x", dict(space.default()), 1.0, 5e4))
    searcher = StrategySearcher(StrategyFactory("random"), list(OBJECTIVES))
    with pytest.raises(ConfigError, match="resume=True"):
        run_tune(searcher, None, tmp_path, 4, RaySettings(), "random")  # type: ignore[arg-type]
