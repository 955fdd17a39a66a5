"""Ray Tune adapter: our ask/tell strategies as a Tune `Searcher`, evaluators as a
function trainable, every finished trial appended to the run's trial store.

The only module that imports Ray. Local Ray by default (few CPUs, a small
object store, no dashboard); `address` (or ``RAY_ADDRESS``) joins an existing
cluster, where trials run on any node that can import mqnas and the evaluator
factory. Each trial records the Ray node it ran on (``provenance.node_id``).

Resume. The run's trial store is the record: a trial is finished iff its record
is in ``trials.jsonl``. Beside it the searcher keeps its live state in
``searcher_state.json`` (the strategy's JSON `state_dict` and the samples handed
out whose records are not stored yet), written after every suggestion and after
every stored trial — never a pickle of the strategy, which is rebuilt from its
factory. `run_tune(..., resume=True)` restores that state; a pending sample whose
record did reach the store is told from the record, every other one (its trial
was running when the search stopped) is handed out again first, and a fresh Tune
experiment (``ray/tune-<k>``) runs the trials the store still lacks. So nothing
finished is evaluated twice, an interrupted trial restarts from scratch (an
evaluation keeps no checkpoint), and the store ends with `num_trials` records.
Tune's own experiment state (`Tuner.restore`) is not used for this: Tune saves it
at most every ~10 s, so after a crash it lags the store, and restoring it re-runs
finished trials and loses track of newer ones. A resume retries the trials that
failed (`retry_failed`): their records move to ``failed_trials.jsonl`` and their
samples are handed out again.

Failures. An evaluation that raises, or whose metrics are not finite, is a
*failed* trial: the trainable reports it as a result (no exception crosses Ray, so
no traceback floods the console) and the store records it with its error. When
`max_consecutive_failures` trials in a row fail with the same error, the searcher
stops suggesting and `run_tune` raises `RepeatedFailureError` with that error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.search import Searcher

from nas.errors import ConfigError, MqnasError
from nas.evaluators import Evaluator, set_threads
from nas.io import atomic_write_text, read_json, write_json
from nas.layout import RAY_DIR, SEARCHER_STATE
from nas.search_monitor import SearchMonitor
from nas.strategies.base import Strategy
from nas.trials import Trial, TrialStore

log = logging.getLogger(__name__)

TUNE_NAME = "tune"


class RepeatedFailureError(MqnasError):
    """Trials keep failing with the same error: the search stopped instead of burning its budget."""


class StrategySearcher(Searcher):
    """Any ask/tell `Strategy` as a Tune searcher.

    factory: builds the strategy (picklable: a top-level callable or a frozen
    dataclass); it is called lazily on first use, then its JSON state applied.
    objectives: the metric names told back to the strategy.
    state_path: where `persist` writes the live JSON state (`run_tune` sets it).
    """

    def __init__(
        self,
        factory: Callable[[], Strategy],
        objectives: Sequence[str],
        state: Mapping[str, Any] | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.objectives = list(objectives)
        self.state_path = None if state_path is None else str(state_path)
        self._strategy: Strategy | None = None
        self._state = dict(state) if state else None
        self._pending: dict[str, dict[str, Any]] = {}  # Tune trial id → sample handed out
        self._requeue: list[dict[str, Any]] = []  # interrupted samples, handed out first
        # this process's stop condition (`run_tune` sets it; never pickled)
        self.stop_when: Callable[[], bool] | None = None

    @property
    def strategy(self) -> Strategy:
        if self._strategy is None:
            self._strategy = self.factory()
            if self._state is not None:
                self._strategy.load_state_dict(self._state["strategy"])
                self._pending = {k: dict(v) for k, v in self._state.get("pending", {}).items()}
                self._requeue = [dict(s) for s in self._state.get("requeue", [])]
        return self._strategy

    # -- Searcher API -----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stop_when is not None and self.stop_when():
            return Searcher.FINISHED
        strategy = self.strategy
        sample = self._requeue.pop(0) if self._requeue else strategy.ask()
        self._pending[trial_id] = dict(sample)
        self.persist()
        # one JSON string: labels contain dots, which Tune would read as nesting
        return {"sample": json.dumps(sample)}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        # not persisted here: `TrialStoreCallback` stores the record first, then persists,
        # so a crash in between leaves the trial pending (re-run) or stored (told on resume)
        sample = self._pending.pop(trial_id, None)
        if sample is None:
            return
        failed = error or result is None or _reported_failure(result)
        metrics = None if failed else _told_metrics(result, self.objectives)
        self.strategy.tell(sample, metrics)

    # -- resume -----------------------------------------------------------------------------
    def resume(self, finished: Sequence[Trial], retry: Sequence[Trial] = ()) -> None:
        """Continue from `state_path` after an interruption; `finished`: the stored trials.

        A pending sample whose trial is in `finished` is told from its record; the
        others are handed out again before the strategy is asked anything new, then
        the samples of `retry` (failed trials to run again). Without a saved state (a
        run from before the searcher kept one), the strategy is warm-started with every
        stored trial instead.
        """
        saved = bool(self.state_path) and Path(str(self.state_path)).is_file()
        if saved:
            self.set_state(read_json(str(self.state_path)))
        strategy = self.strategy
        by_id = {t.id: t for t in finished}
        told = [] if saved else list(finished)
        for trial_id, sample in list(self._pending.items()):
            if trial_id in by_id:  # stored just before the interruption
                told.append(by_id[trial_id])
            else:  # was running: hand it out again
                self._requeue.append(sample)
        for t in told:
            ok = t.state == "completed"
            metrics = _told_metrics({**t.cost, **t.metrics}, self.objectives) if ok else None
            strategy.tell(self._pending.get(t.id, t.sample), metrics)
        self._pending = {}
        n_interrupted = len(self._requeue)
        self._requeue.extend(dict(t.sample) for t in retry)
        self.persist()
        log.info(
            "resuming the search: %d trials stored, %d interrupted and %d failed ones to run again",
            len(finished),
            n_interrupted,
            len(retry),
        )

    def persist(self) -> None:
        """Write the live state to `state_path` (atomically; compact JSON)."""
        if self.state_path:
            atomic_write_text(self.state_path, json.dumps(self.get_state(), separators=(",", ":")))

    # -- state (JSON, not pickle) -----------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        if self._strategy is None and self._state is not None:
            return dict(self._state)
        return {
            "strategy": self.strategy.state_dict(),
            "pending": {k: dict(v) for k, v in self._pending.items()},
            "requeue": [dict(s) for s in self._requeue],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._state = dict(state)
        self._strategy = None
        self._pending, self._requeue = {}, []

    def save(self, checkpoint_path: str) -> None:
        write_json(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(read_json(checkpoint_path))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into its experiment files; keep the factory and our JSON
        # state only, never the live strategy (it may hold a supernet or a predictor), and do
        # not build a strategy just to pickle it.
        return {
            "factory": self.factory,
            "objectives": self.objectives,
            "state": self._state if self._strategy is None else self.get_state(),
            "state_path": self.state_path,
            "_metric": self._metric,
            "_mode": self._mode,
        }

    def __setstate__(self, d: dict[str, Any]) -> None:
        init = StrategySearcher.__init__
        init(self, d["factory"], d["objectives"], d["state"], d.get("state_path"))
        self._metric, self._mode = d["_metric"], d["_mode"]


# -- the trainable ---------------------------------------------------------------------------
_EVALUATORS: dict[Any, Evaluator] = {}


def _evaluator(make: Callable[[], Evaluator]) -> Evaluator:
    """One evaluator per worker process (a supernet loads once, not once per trial)."""
    if make not in _EVALUATORS:
        _EVALUATORS[make] = make()
    return _EVALUATORS[make]


def evaluate_trial(
    config: dict[str, Any], make_evaluator: Callable[[], Evaluator], threads: int
) -> None:
    """Tune function trainable: evaluate the suggested sample and report its trial."""
    import ray

    set_threads(threads)
    sample = json.loads(config["sample"])
    ctx = tune.get_context()
    provenance = {
        "trial_name": ctx.get_trial_name(),
        # which machine of a cluster evaluated it (hosts may share a name)
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    try:
        evaluator = _evaluator(make_evaluator)
        trial = evaluator.evaluate(
            sample,
            trial_id=ctx.get_trial_id(),
            report=lambda m: tune.report(dict(m)),
            provenance=provenance,
        )
    except Exception as e:  # noqa: BLE001  (no evaluator here: a failed trial, not a crash)
        log.warning("trial %s: %s: %s", ctx.get_trial_id(), type(e).__name__, e)
        trial = Trial(
            id=ctx.get_trial_id(),
            sample=sample,
            spec_hash="",
            metrics={},
            cost={},
            state="failed",
            timings={},
            provenance=provenance,
            error=f"{type(e).__name__}: {e}",
        )
    if trial.state == "failed":
        # a result, not an exception: Tune logs no traceback, the store records the error;
        # the metric Tune sorts by must be present, and +inf ranks last for mode=min
        tune.report({"val_loss": math.inf, FAILED: 1, "trial_json": json.dumps(trial.to_json())})
        return
    tune.report({**trial.metrics, **trial.cost, "trial_json": json.dumps(trial.to_json())})


FAILED = "mqnas_failed"  # key of a failed trial's result


def _reported_failure(result: Mapping[str, Any]) -> bool:
    return bool(result.get(FAILED))


def _told_metrics(values: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, float] | None:
    """What the strategy is told for a trial whose reported values are `values`."""
    if not all(k in values for k in objectives):
        return None
    metrics = {k: float(values[k]) for k in objectives}
    if "constraint" in values:
        metrics["constraint"] = float(values["constraint"])
    return metrics


def trial_dirname(trial: Any) -> str:
    """Tune's directory of a trial: its id (Tune's default spells out the whole sample)."""
    return f"trial_{trial.trial_id}"


class TrialStoreCallback(Callback):
    """Appends every finished or failed Tune trial to the run's `trials.jsonl`.

    after_store: called with each record after it is stored (`run_tune` persists the
    searcher's state there, so the state never says "pending" about a trial the store
    lacks, and updates the progress bar and the failure streak).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        strategy_name: str,
        after_store: Callable[[Trial], None] | None = None,
    ) -> None:
        self.run_dir = str(run_dir)
        self.strategy_name = strategy_name
        self.after_store = after_store

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into its experiment files; the hook is this process's
        return {**self.__dict__, "after_store": None}

    def _store(self) -> TrialStore:
        return TrialStore(self.run_dir)

    def _append(self, trial: Trial) -> None:
        store = self._store()
        store.append(trial)
        store.snapshot()
        if self.after_store is not None:
            self.after_store(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        res = trial.last_result or {}
        if "trial_json" not in res:  # stopped early by a scheduler: record what it reached
            self._failed(trial, "pruned", "stopped early by the scheduler")
            return
        t = Trial.from_json(json.loads(res["trial_json"]))
        self._append(replace(t, provenance={**t.provenance, "strategy": self.strategy_name}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "failed", _error_text(trial))

    def _failed(self, trial: Any, state: str, error: str) -> None:
        self._append(
            Trial(
                id=trial.trial_id,
                sample=json.loads(trial.config["sample"]),
                spec_hash="",
                metrics={
                    k: float(v)
                    for k, v in (trial.last_result or {}).items()
                    if k in ("val_loss",) and isinstance(v, (int, float))
                },
                cost={},
                state=state,
                timings={},
                provenance={"strategy": self.strategy_name},
                error=error,
                created=time.time(),
            )
        )


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "error"
    return str(getattr(trial, "error_msg", "") or "error")[:500]


# -- running ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    """Where and how trials run: the experiment's ``ray:`` section field for field
    (`nas.config.RayConfig`, converted whole), plus ASHA's horizon."""

    address: str | None = None
    num_cpus: int = 2
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int = 2
    object_store_mb: int = 256
    asha: bool = False
    asha_max_t: int = 4


def init_ray(s: RaySettings) -> None:
    """Join the cluster at `s.address` (else ``RAY_ADDRESS``), or start a small local Ray.

    A local Ray is always a new one (``address="local"``): without it, `ray.init` would
    join whatever cluster a `ray start` on this machine last announced, and refuse our
    CPU count there.
    """
    import ray

    address = s.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        if address and address != ray.get_runtime_context().gcs_address:
            log.warning(
                "Ray is already initialized in this process (GCS %s); %s is not joined. "
                "Call ray.shutdown() first to switch clusters.",
                ray.get_runtime_context().gcs_address,
                address,
            )
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not address:
        # Ray 2.60 enables token auth on a new local cluster and warns that it did: right
        # for a local Ray, and nothing the user has to act on
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    # Tune's new console output prints a table per status update; ours is the progress log.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        log.info("joining the Ray cluster at %s", address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise RayJoinError(_join_failure(address, e)) from e
    else:
        ray.init(
            address="local",
            num_cpus=s.num_cpus,
            object_store_memory=s.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )


class RayJoinError(ConfigError):
    """The Ray cluster at the configured address could not be joined."""


def _join_failure(address: str, e: BaseException) -> str:
    """What to do when joining `address` failed with `e`."""
    chain: list[str] = []
    cause: BaseException | None = e
    while cause is not None:  # Ray wraps the GCS client's error as text in a RuntimeError
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        return (
            f"the Ray cluster at {address} refused this process's credentials. A cluster "
            "started with `ray start --head` uses token authentication: set RAY_AUTH_MODE=token "
            "here and give the head's token as RAY_AUTH_TOKEN (or in ~/.ray/auth_token), as on "
            "every node that joins it (docs.ray.io: ray-security/token-auth)"
        )
    return (
        f"could not join the Ray cluster at {address} ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); is `ray start --head --port=PORT` running "
        "there and reachable from here? Remove ray.address (and RAY_ADDRESS) for a local Ray"
    )


def _experiment_name(storage: Path) -> str:
    """``tune`` for a run's first search, ``tune-<k>`` for its k-th resumption."""
    if not (storage / TUNE_NAME).exists():
        return TUNE_NAME
    k = 1
    while (storage / f"{TUNE_NAME}-{k}").exists():
        k += 1
    return f"{TUNE_NAME}-{k}"


def run_tune(
    searcher: StrategySearcher,
    make_evaluator: Callable[[], Evaluator],
    run_dir: str | os.PathLike[str],
    num_trials: int,
    settings: RaySettings,
    strategy_name: str,
    resume: bool = False,
    *,
    retry_failed: bool = True,
    objective: tuple[str, str] = ("val_loss", "min"),
    max_consecutive_failures: int = 3,
    progress: bool = True,
) -> list[Trial]:
    """Run (or resume) the search until the run's store holds `num_trials` trials.

    Returns every trial in the store. Resume and failure semantics: see the module doc.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from tqdm.contrib.logging import logging_redirect_tqdm

    run_dir = Path(run_dir).resolve()  # Tune's workers start in directories of their own
    storage = run_dir / RAY_DIR
    store = TrialStore(run_dir)
    searcher.state_path = str(run_dir / SEARCHER_STATE)
    if resume:
        retry = store.retire_failed() if retry_failed else []
        if retry:
            log.info("retrying %d failed trials (their records: %s)", len(retry), store.retired)
        finished = store.trials()
        searcher.resume(finished, retry)
    elif finished := store.trials():
        raise ConfigError(
            f"{store.jsonl} already holds {len(finished)} trials; continue that search with "
            f"resume=True (`nas search --resume {run_dir}`) or use a new run directory"
        )
    remaining = num_trials - len(finished)
    if remaining <= 0:
        log.info("the run already holds %d of %d trials; nothing to run", len(finished), num_trials)
        return finished
    init_ray(settings)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # the loggers are ours (below)
    monitor = SearchMonitor(num_trials, objective, max_consecutive_failures, progress)
    searcher.stop_when = lambda: monitor.tripped

    def after_store(trial: Trial) -> None:
        searcher.persist()
        monitor.stored(trial)

    threads = max(1, int(settings.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, make_evaluator=make_evaluator, threads=threads),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    scheduler = None
    if settings.asha:
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=settings.asha_max_t, grace_period=1
        )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            metric="val_loss",
            mode="min",
            num_samples=remaining,
            max_concurrent_trials=settings.max_concurrent,
            # one process per concurrent slot, reused: the supernet loads once per worker
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=_experiment_name(storage),
            storage_path=str(storage),
            callbacks=[
                TrialStoreCallback(run_dir, strategy_name, after_store=after_store),
                # Tune's own per-trial CSV/JSON logs, without its TensorBoard one: that one
                # warns on every failed trial's +inf (and TensorBoard is not how runs are read)
                CSVLoggerCallback(),
                JsonLoggerCallback(),
            ],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    t0 = time.perf_counter()
    monitor.start(finished)
    try:
        with logging_redirect_tqdm():  # log lines above the bar, not through it
            tuner.fit()
    finally:
        monitor.close()
        searcher.stop_when = None
    log.info("search: %d trials in %.0f s", monitor.done - len(finished), time.perf_counter() - t0)
    if monitor.tripped:
        raise RepeatedFailureError(
            f"the search stopped: {monitor.streak} trials in a row failed with "
            f"{monitor.last_error!r}; fix that and resume (`nas search --resume {run_dir}` "
            "retries failed trials)"
        )
    return store.trials()
