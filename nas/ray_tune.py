"""Ray Tune adapter: our ask/tell strategies as a Tune `Searcher`, evaluators as a
function trainable, every finished trial appended to the run's trial store.

The only module that imports Ray. Local Ray by default (few CPUs, a small
object store, no dashboard); `address` joins an existing cluster, where trials
run on any node that can import mqnas and read the run directory.

Resume: `Tuner.restore` brings back Tune's own experiment state (Ray's files
under ``<run>/ray/``, Ray's internals, never handed to users); the searcher's
state is our JSON (`StrategySearcher.save`), and the strategy object itself is
rebuilt from its factory rather than pickled, so a restored searcher asks what
the interrupted one would have asked next.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.search import Searcher

from nas.errors import MqnasError
from nas.evaluators import Evaluator, set_threads
from nas.io import read_json, write_json
from nas.strategies.base import Strategy
from nas.trials import Trial, TrialStore

log = logging.getLogger(__name__)

TUNE_NAME = "tune"


class TrialFailedError(MqnasError):
    """An architecture's evaluation raised; Tune records the trial as errored."""


class StrategySearcher(Searcher):
    """Any ask/tell `Strategy` as a Tune searcher.

    factory: builds the strategy (picklable: a top-level callable or a frozen
    dataclass); it is called lazily on first use, then its JSON state applied.
    objectives: the metric names told back to the strategy.
    """

    def __init__(
        self,
        factory: Callable[[], Strategy],
        objectives: Sequence[str],
        state: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.objectives = list(objectives)
        self._strategy: Strategy | None = None
        self._state = dict(state) if state else None
        self._pending: dict[str, dict[str, Any]] = {}

    @property
    def strategy(self) -> Strategy:
        if self._strategy is None:
            self._strategy = self.factory()
            if self._state is not None:
                self._strategy.load_state_dict(self._state["strategy"])
                self._pending = dict(self._state.get("pending", {}))
        return self._strategy

    # -- Searcher API -----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        sample = self.strategy.ask()
        self._pending[trial_id] = dict(sample)
        # one JSON string: labels contain dots, which Tune would read as nesting
        return {"sample": json.dumps(sample)}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        sample = self._pending.pop(trial_id, None)
        if sample is None:
            return
        metrics = None
        if not error and result is not None and all(k in result for k in self.objectives):
            metrics = {k: float(result[k]) for k in self.objectives}
            if "constraint" in result:
                metrics["constraint"] = float(result["constraint"])
        self.strategy.tell(sample, metrics)

    # -- state (JSON, not pickle) -----------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        if self._strategy is None and self._state is not None:
            return dict(self._state)
        return {"strategy": self.strategy.state_dict(), "pending": dict(self._pending)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._state = dict(state)
        self._strategy = None

    def save(self, checkpoint_path: str) -> None:
        write_json(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(read_json(checkpoint_path))

    def __getstate__(self) -> dict[str, Any]:
        # Tune stores its searcher in its experiment state; store the factory and our JSON
        # state only, never the live strategy (it may hold a supernet or a predictor).
        return {
            "factory": self.factory,
            "objectives": self.objectives,
            "state": self.get_state(),
            "_metric": self._metric,
            "_mode": self._mode,
        }

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["factory"], d["objectives"], d["state"])  # type: ignore[misc]
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
    set_threads(threads)
    evaluator = _evaluator(make_evaluator)
    sample = json.loads(config["sample"])
    ctx = tune.get_context()
    trial = evaluator.evaluate(
        sample,
        trial_id=ctx.get_trial_id(),
        report=lambda m: tune.report(dict(m)),
        provenance={"trial_name": ctx.get_trial_name()},
    )
    if trial.state == "failed":
        raise TrialFailedError(trial.error or "evaluation failed")
    tune.report({**trial.metrics, **trial.cost, "trial_json": json.dumps(trial.to_json())})


class TrialStoreCallback(Callback):
    """Appends every finished or failed Tune trial to the run's `trials.jsonl`."""

    def __init__(self, run_dir: str | os.PathLike[str], strategy_name: str) -> None:
        self.run_dir = str(run_dir)
        self.strategy_name = strategy_name

    def _store(self) -> TrialStore:
        return TrialStore(self.run_dir)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        res = trial.last_result or {}
        if "trial_json" not in res:  # stopped early by a scheduler: record what it reached
            self._failed(trial, "pruned", "stopped early by the scheduler")
            return
        t = Trial.from_json(json.loads(res["trial_json"]))
        prov = {**t.provenance, "strategy": self.strategy_name}
        store = self._store()
        store.append(_replace(t, provenance=prov))
        store.snapshot()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "failed", _error_text(trial))

    def _failed(self, trial: Any, state: str, error: str) -> None:
        import time

        sample = json.loads(trial.config["sample"])
        store = self._store()
        store.append(
            Trial(
                id=trial.trial_id,
                sample=sample,
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
        store.snapshot()


def _replace(t: Trial, **kw: Any) -> Trial:
    from dataclasses import replace

    return replace(t, **kw)


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "error"
    return str(getattr(trial, "error_msg", "") or "error")[:500]


# -- running ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    address: str | None = None
    num_cpus: int = 2
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int = 2
    object_store_mb: int = 256
    asha: bool = False
    asha_max_t: int = 4


def init_ray(s: RaySettings) -> None:
    """Join the cluster at `s.address`, or start a small local Ray (no dashboard)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Tune's new console output prints a table per status update; ours is the progress log.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if s.address:
        ray.init(address=s.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(
            num_cpus=s.num_cpus,
            object_store_memory=s.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )


def run_tune(
    searcher: StrategySearcher,
    make_evaluator: Callable[[], Evaluator],
    run_dir: str | os.PathLike[str],
    num_trials: int,
    settings: RaySettings,
    strategy_name: str,
    resume: bool = False,
) -> list[Trial]:
    """Run (or resume) the search; returns every trial in the run's store."""
    from ray.tune.schedulers import ASHAScheduler

    run_dir = Path(run_dir)
    storage = (run_dir / "ray").resolve()
    init_ray(settings)
    threads = max(1, int(settings.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, make_evaluator=make_evaluator, threads=threads),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    exp = storage / TUNE_NAME
    if resume and tune.Tuner.can_restore(str(exp)):
        log.info("resuming the Tune experiment in %s", exp)
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_errored=False)
    else:
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
                num_samples=num_trials,
                max_concurrent_trials=settings.max_concurrent,
                # one process per concurrent slot, reused: the supernet loads once per worker
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=TUNE_NAME,
                storage_path=str(storage),
                callbacks=[TrialStoreCallback(run_dir, strategy_name)],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    tuner.fit()
    return TrialStore(run_dir).trials()
