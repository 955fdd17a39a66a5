"""The main job: `nas search <experiment.yaml>` from config to exported architecture.

1. validate the config (`preflight`: registries, device, objectives, paths); build the
   supernet (optionally from a teacher) and the task; load the device's latency table,
   measuring the keys it lacks (host backends); check the budgets are feasible — all
   before the run directory exists, so a mistake leaves nothing behind;
2. create the run directory; train the supernet with the sandwich rule, checkpointed;
3. search: an ask/tell strategy through Ray Tune, or one-shot (DQSS + PaS);
4. store trials, compute the Pareto front, export the chosen architecture(s),
   measure the chosen one end to end, write ``report.md``.

Every path of the config is absolute by then (`nas.config.resolve_paths`): Ray workers
start in directories of their own.

`nas.app.build` turns the config into objects (step 1); this module runs steps 2–4 on
them, and gives Ray workers what they rebuild their evaluator and strategy from.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.app.build import (
    Built,
    build,
    build_task,
    finetune_evaluator,
    load_cost_model,
    load_trained,
    quality_scorer,
)
from nas.app.report import ExportedArch, RunSummary, finish_run
from nas.app.spaces import space_entry
from nas.config import ExperimentConfig, parse_config
from nas.io import share, write_json
from nas.runs import RunDir
from nas.strategies import ONESHOT
from nas.supernet import Supernet
from nas.training.checkpoint import LATEST
from nas.trials import TrialStore

log = logging.getLogger(__name__)


def train_supernet(
    cfg: ExperimentConfig,
    run: RunDir,
    supernet: Supernet,
    task,
    progress: bool,
    ray_address: str | None = None,
):
    """Sandwich training, resumed from the run's checkpoints; the final weights saved.

    With ``supernet.distributed`` it runs on that many Ray Train workers (on the Ray
    `ray_address` or ``ray.address`` names, else a local one), resumed whatever worker
    count wrote the checkpoints.
    """
    from safetensors.torch import save_file

    from nas.training.sandwich import SupernetTrainer

    if run.supernet_weights.is_file():
        load_trained(cfg, run, supernet)
        log.info("supernet already trained: %s", run.supernet_weights)
        return []
    s = cfg.supernet
    history: list[dict] = []
    # distillation from the max subnet is the sandwich's own in-place distillation
    base_task = getattr(task, "base", task)
    distributed = s.distributed_settings()
    if s.steps > 0 and distributed is not None:
        from nas.training.distributed import train_supernet_parallel

        _init_ray(cfg, ray_address)
        history = train_supernet_parallel(
            supernet,
            base_task,
            s.trainer_config(cfg.seed),
            distributed,
            checkpoint_dir=run.checkpoints,
            resume=(run.checkpoints / LATEST).is_file(),  # any worker count wrote them
            progress=progress,
        )
    elif s.steps > 0:
        trainer = SupernetTrainer(
            supernet,
            base_task,
            s.trainer_config(cfg.seed),
            device=cfg.device,
            checkpoint_dir=run.checkpoints,
            progress=progress,
            resume=run.checkpoints.exists(),
        )
        history = trainer.train()
    state = {k: v.detach().contiguous().cpu() for k, v in supernet.state_dict().items()}
    save_file(state, str(run.supernet_weights))
    return history


def _init_ray(cfg: ExperimentConfig, address: str | None = None) -> None:
    """The experiment's Ray (`ray:`), up before data-parallel work; the search reuses it."""
    from nas.ray_tune import RaySettings, init_ray

    init_ray(RaySettings(**{**cfg.ray.model_dump(), "address": address or cfg.ray.address}))


# -- what Ray workers rebuild ----------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """A picklable, JSON-sized description from which a worker rebuilds what it needs."""

    config_json: str
    run_dir: str
    progress: bool = True  # progress bars of work done outside trials (weak labels)

    @property
    def cfg(self) -> ExperimentConfig:
        return parse_config(json.loads(self.config_json), f"{self.run_dir}/config.yaml")

    def supernet(self) -> Supernet:
        return load_trained(self.cfg, RunDir(Path(self.run_dir))).eval()

    def cost_model(self):
        return load_cost_model(self.cfg, space_entry(self.cfg.space), progress=False)


@dataclass(frozen=True)
class EvaluatorFactory:
    ctx: RunContext

    def __call__(self):
        from nas.evaluators import SupernetEvaluator

        cfg = self.ctx.cfg
        net = self.ctx.supernet()
        task = build_task(cfg, net)
        cost = self.ctx.cost_model()
        if cfg.search.evaluator == "supernet":
            return SupernetEvaluator(net, task, cost.costs, quality_scorer(cfg, task))
        return finetune_evaluator(cfg, net, task, cost)


@dataclass(frozen=True)
class StrategyFactory:
    """Builds the configured strategy, wrapped in the budget filter."""

    ctx: RunContext

    def __call__(self):
        from nas.strategies import BudgetFilter, Objective, make_strategy

        cfg = self.ctx.cfg
        space = space_entry(cfg.space).space()
        cost = self.ctx.cost_model()
        objectives = [Objective(k, v) for k, v in cfg.search.objectives.items()]
        opts = dict(cfg.search.strategy_options)
        if cfg.search.strategy == "predictor":
            opts.update(predictor_inputs(self.ctx, cost))
            opts.setdefault("budgets", dict(cfg.budgets))
            return make_strategy("predictor", space, objectives, cfg.seed, **opts)
        inner = make_strategy(cfg.search.strategy, space, objectives, cfg.seed, **opts)
        if not cfg.budgets:
            return inner
        return BudgetFilter(inner, cost.costs, dict(cfg.budgets))


def predictor_inputs(ctx: RunContext, cost) -> dict[str, Any]:
    """What the predictor-guided strategy needs on an experiment: the default kit's
    components, with the supernet's loss under inherited weights as the first weak label
    (AceNAS' weak supervision) before the zero-cost ones, the rankers on the experiment's
    device, and the costs the cost model has as encoder features."""
    from nas.evaluators import SupernetEvaluator
    from predictors.encoders import SpaceEncoder
    from predictors.kit import ZERO_COST, rankers, zero_cost_weak

    cfg = ctx.cfg
    space = space_entry(cfg.space).space()
    zero_cost = zero_cost_weak(space, cost.costs)

    def weak_fn(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        net = ctx.supernet()
        ev = SupernetEvaluator(net, build_task(cfg, net))
        cols = [np.asarray(ev.score_many(samples, progress=ctx.progress))[:, None]]
        if zero_cost is not None:
            cols.append(zero_cost(samples))
        return np.concatenate(cols, 1)

    return {
        "weak_fn": weak_fn,
        "encoder": SpaceEncoder(
            space,
            "mixed",
            cost_model=cost,
            cost_features=[c for c in ZERO_COST if c in cost.available_costs],
        ),
        "predictor_factory": rankers(cfg.seed, cfg.device),
        "cost_fn": cost.costs,
    }


# -- the whole job ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    run: RunDir
    trials: int
    summary: RunSummary | None  # None: no trial completed
    seconds: float

    @property
    def chosen(self) -> ExportedArch | None:
        return self.summary.chosen if self.summary is not None else None


def run_search(
    cfg: ExperimentConfig,
    *,
    run: RunDir | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    retry_failed: bool = True,
) -> SearchResult:
    """Run (or, given an existing `run`, resume) the experiment end to end.

    A resumed run retries its failed trials unless `retry_failed` is false.
    """
    t0 = time.perf_counter()
    resume = run is not None
    search_opts = {"ray_address": ray_address, "progress": progress, "retry_failed": retry_failed}
    built = build(cfg, progress)  # everything that can fail on the config fails here
    run = run or RunDir.create(cfg)
    log.info("run directory: %s", run.path)
    try:
        summary = _train_and_search(cfg, run, built, resume, **search_opts)
    finally:
        share(run.path)  # readable by the group: a colleague, the nodes of a cluster
    return SearchResult(run, len(_trial_ids(run)), summary, time.perf_counter() - t0)


def _train_and_search(
    cfg: ExperimentConfig,
    run: RunDir,
    built: Built,
    resume: bool,
    *,
    ray_address: str | None,
    progress: bool,
    retry_failed: bool,
) -> RunSummary | None:
    """Steps 3–5 of the job in `run`: train, search, report; what the search found."""
    supernet, task, cost, entry = built.supernet, built.task, built.cost_model, built.entry
    train_supernet(cfg, run, supernet, task, progress, ray_address)
    if cfg.search.kind == "oneshot":
        _run_oneshot(cfg, run, supernet, task, cost, progress, ray_address)
        return finish_run(cfg, run, supernet, cost, entry, task)
    from nas.ray_tune import RaySettings, RepeatedFailureError, StrategySearcher, run_tune

    ctx = RunContext(json.dumps(cfg.model_dump(mode="json")), str(run.path), progress)
    # `ray:` is RaySettings' own fields: converted whole, the CLI's address first
    settings = RaySettings(**{**cfg.ray.model_dump(), "address": ray_address or cfg.ray.address})
    searcher = StrategySearcher(StrategyFactory(ctx), list(cfg.search.objectives))
    try:
        run_tune(
            searcher,
            EvaluatorFactory(ctx),
            run.path,
            cfg.search.num_trials,
            settings,
            cfg.search.strategy,
            resume=resume,
            retry_failed=retry_failed,
            objective=next(iter(cfg.search.objectives.items())),
            max_consecutive_failures=cfg.search.max_consecutive_failures,
            progress=progress,
        )
    except RepeatedFailureError:
        finish_run(cfg, run, supernet, cost, entry, task)  # the report shows what failed
        raise
    return finish_run(cfg, run, supernet, cost, entry, task)


def _run_oneshot(
    cfg: ExperimentConfig,
    run: RunDir,
    supernet: Supernet,
    task: Any,
    cost: Any,
    progress: bool,
    ray_address: str | None = None,
) -> None:
    """The one-shot search's one architecture, fine-tuned with the budget of a sample-based
    trial and stored as the run's trial: report, export and notebook read it like any other."""
    store = TrialStore(run.path)
    if any(t.state == "completed" for t in store.trials()):
        log.info("one-shot search already finished in %s", run.path)
        return
    assert cfg.search.oneshot is not None  # the config validator requires it for kind: oneshot
    settings = cfg.search.oneshot.settings(batch_size=cfg.task.batch_size, seed=cfg.seed)
    # the search trains on the task itself, not on a wrapper such as distillation's
    base_task = getattr(task, "base", task)
    distributed = cfg.supernet.distributed_settings()
    if distributed is not None:  # the supernet's data parallelism, logits averaged alike
        from nas.training.distributed import search_parallel

        _init_ray(cfg, ray_address)
        result = search_parallel(
            supernet, base_task, cost, settings, distributed, progress=progress
        )
    else:
        result = ONESHOT.get("differentiable")(
            supernet, base_task, cost, settings, device=cfg.device, progress=progress
        )
    write_json(run.oneshot_trace, result.trace())
    trial = finetune_evaluator(cfg, supernet, task, cost).evaluate(
        result.sample, provenance={"strategy": "oneshot"}
    )
    metrics = {**trial.metrics, "expected_latency_ms": result.expected_latency_ms}
    store.append(replace(trial, metrics=metrics))
    store.snapshot()


def _trial_ids(run: RunDir) -> list[str]:
    return TrialStore(run.path).ids()
