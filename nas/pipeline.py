"""The main job: `nas search <experiment.yaml>` from config to exported architecture.

1. validate the config, create the run directory;
2. build the space; load the device's latency table, measuring the keys it
   lacks (host backends) before anything trains; check the budgets are feasible;
3. build the supernet (optionally from a teacher) and the task; train the
   supernet with the sandwich rule, checkpointed;
4. search: an ask/tell strategy through Ray Tune, or one-shot (DQSS + PaS);
5. store trials, compute the Pareto front, export the chosen architecture(s),
   measure the chosen one end to end, write ``report.md``.

Like the CLI, this module wires the packages together, so it imports
`search_spaces`, `latency_tables` and `predictors` (inside functions).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import ExperimentConfig, parse_config
from nas.errors import ConfigError
from nas.runs import RunDir
from nas.supernet import SpaceEntry, Supernet, get_space

log = logging.getLogger(__name__)

HOST_BACKENDS = ("torch", "onnxruntime", "tflite")


def default_device_name() -> str:
    """The table name of this host kind (the shipped tables use it)."""
    return f"cpu-{platform.machine()}"


def space_entry(cfg: ExperimentConfig) -> SpaceEntry:
    import search_spaces  # noqa: F401  (registers the shipped spaces)

    return get_space(cfg.space)


# -- latency ------------------------------------------------------------------------------
def make_backend(cfg: ExperimentConfig):
    from latency_tables.backends import BACKENDS

    lat = cfg.latency
    opts: dict[str, Any] = {"serial": lat.serial} if lat.backend == "adb" and lat.serial else {}
    return BACKENDS.get(lat.backend)(threads=lat.threads, warmup=lat.warmup, runs=lat.runs, **opts)


def table_location(cfg: ExperimentConfig) -> tuple[Path, str]:
    from latency_tables.table import DATA_ROOT

    return Path(cfg.latency.root or DATA_ROOT), cfg.latency.device or default_device_name()


def load_cost_model(cfg: ExperimentConfig, entry: SpaceEntry, progress: bool = True):
    """The cost model of the experiment's table (calibrated with `latency.calibrated`);
    measures missing keys when allowed."""
    from latency_tables.build import build_table
    from latency_tables.calibration import Calibration, calibration_path
    from latency_tables.cost import CostModel
    from latency_tables.structure import SpaceStructure
    from latency_tables.table import LatencyTable, table_paths

    root, device = table_location(cfg)
    backend_name = cfg.latency.backend
    csv_path, _ = table_paths(root, device, backend_name)
    structure = SpaceStructure(entry.space())
    cal_path = calibration_path(csv_path, structure.space.name)
    if cfg.latency.calibrated and not cal_path.exists():  # fail before measuring anything
        raise ConfigError(
            f"latency.calibrated: no calibration of space {structure.space.name!r} at "
            f"{cal_path}; fit one with `nas latency validate --space {cfg.space} "
            f"--backend {backend_name} --device {device}` or set latency.calibrated: false"
        )
    table = LatencyTable.load(root, device, backend_name) if csv_path.exists() else None
    missing = (
        [k.id for k in structure.block_keys()]
        if table is None
        else [k.id for k in table.missing(structure.block_keys())]
    )
    if missing:
        if not cfg.latency.measure_missing or backend_name not in HOST_BACKENDS:
            where = f"table {csv_path}" if table is not None else f"no table at {csv_path}"
            raise ConfigError(
                f"latency: {where} lacks {len(missing)} keys of space {cfg.space!r}; measure "
                f"them with `nas latency build --space {cfg.space} --backend {backend_name} "
                f"--device {device}` (or set latency.measure_missing: true for a host backend)"
            )
        log.info(
            "latency table %s lacks %d keys of %s: measuring them",
            csv_path,
            len(missing),
            cfg.space,
        )
        with make_backend(cfg) as backend:
            build_table(entry, backend, root, device, progress=progress)
        table = LatencyTable.load(root, device, backend_name)
    calibration = None
    if cfg.latency.calibrated:
        calibration = Calibration.load(cal_path)
        log.info("latency: the table sum calibrated by %s", cal_path)
    return CostModel(
        entry.space(), table, strict=True, structure=structure, calibration=calibration
    )


def check_budgets(cfg: ExperimentConfig, space, cost) -> None:
    """Refuse a budget that even the cheapest architecture exceeds (nothing trains first)."""
    if not cfg.budgets:
        return
    probe = [space.min(), *space.sample_many(2000, rng=cfg.seed)]
    costs = cost.costs(probe, tuple(cfg.budgets))
    for name, limit in cfg.budgets.items():
        best = float(np.nanmin(costs[name]))
        if best > limit:
            raise ConfigError(
                f"budgets.{name}: {limit:g} is infeasible; the cheapest architecture of space "
                f"{cfg.space!r} found costs {best:.4g}. Raise budgets.{name} to at least "
                f"{best * 1.05:.4g} or choose a smaller space"
            )


# -- supernet and task --------------------------------------------------------------------
def build_supernet(cfg: ExperimentConfig, entry: SpaceEntry) -> Supernet:
    net = entry.supernet(device=cfg.device)
    teacher = cfg.supernet.teacher
    if teacher:
        if not Path(teacher).is_dir():
            raise ConfigError(
                f"supernet.teacher: directory {teacher} does not exist; give a diffusers model "
                "directory saved with save_pretrained, or remove the key"
            )
        net.load_teacher(teacher)  # type: ignore[attr-defined]
    return net


def build_task(cfg: ExperimentConfig, supernet: Supernet):
    """The experiment's task for the supernet's inputs (its max subnet may be the teacher)."""
    from nas.tasks.base import DenoiserIO

    return build_task_for_io(cfg, DenoiserIO.of(supernet), cfg.device, supernet)


def build_task_for_io(cfg: ExperimentConfig, io, device: str, supernet: Supernet | None = None):
    """The experiment's task for a denoiser with inputs `io` (an exported model, too)."""
    t = cfg.task
    if t.kind == "digits":
        from nas.tasks.digits import DigitsDenoising

        task = DigitsDenoising(
            io,
            seed=cfg.seed,
            val_timesteps=t.val_timesteps,
            val_images=t.val_images,
            device=device,
        )
    else:
        from nas.tasks.image_folder import ImageFolderDenoising

        task = ImageFolderDenoising(
            io,
            t.path,
            captions=t.captions,
            vae=t.vae,
            seed=cfg.seed,
            val_timesteps=t.val_timesteps,
            val_images=t.val_images,
            device=device,
        )
    if t.distill is not None:
        from nas.tasks.distill import DistillationTask

        if t.distill.teacher == "supernet_max":
            if supernet is None:
                raise ConfigError(
                    "task.distill.teacher: 'supernet_max' needs the run's supernet; "
                    "give a diffusers teacher directory to train an export on its own"
                )
            teacher: Any = supernet
        else:
            teacher = load_teacher_model(t.distill.teacher, device)
        task = DistillationTask(
            task, teacher, out_weight=t.distill.out_weight, feat_weight=t.distill.feat_weight
        )
    return task


def load_teacher_model(path: str, device: str):
    from nas.diffusers_compat import read_teacher_config

    if not Path(path).is_dir():
        raise ConfigError(
            f"task.distill.teacher: directory {path} does not exist; give a diffusers model "
            "directory or 'supernet_max'"
        )
    p, conf = read_teacher_config(path, None, None)
    import diffusers

    cls = getattr(diffusers, conf.get("_class_name", ""), None)
    if cls is None:
        raise ConfigError(f"task.distill.teacher: {path} names an unknown model class")
    return cls.from_pretrained(p, local_files_only=True).to(device).eval()


def load_trained(cfg: ExperimentConfig, run: RunDir, supernet: Supernet | None = None) -> Supernet:
    """The run's trained supernet (`supernet` filled in place, or a new one built)."""
    from safetensors.torch import load_file

    net = supernet if supernet is not None else space_entry(cfg).supernet(device=cfg.device)
    net.load_state_dict(load_file(run.supernet_weights, device=str(cfg.device)))
    return net


def finetune_evaluator(cfg: ExperimentConfig, supernet: Supernet, task, cost):
    """The strong evaluator of the experiment (`search.finetune`); ASHA gets reports."""
    from nas.evaluators import FinetuneEvaluator

    ft = cfg.search.finetune
    return FinetuneEvaluator(
        supernet,
        task,
        cost.costs,
        steps=ft.steps,
        batch_size=ft.batch_size,
        lr=ft.lr,
        seed=cfg.seed,
        report_every=max(1, ft.steps // 4) if cfg.ray.asha else None,
    )


def train_supernet(cfg: ExperimentConfig, run: RunDir, supernet: Supernet, task, progress: bool):
    """Sandwich training, resumed from the run's checkpoints; the final weights saved."""
    from safetensors.torch import save_file

    from nas.training.sandwich import SupernetTrainer

    if run.supernet_weights.is_file():
        load_trained(cfg, run, supernet)
        log.info("supernet already trained: %s", run.supernet_weights)
        return []
    s = cfg.supernet
    history: list[dict] = []
    if s.steps > 0:
        trainer = SupernetTrainer(
            supernet,
            # distillation from the max subnet is the sandwich's own in-place distillation
            getattr(task, "base", task),
            steps=s.steps,
            batch_size=s.batch_size,
            n_random=s.n_random,
            lr=s.lr,
            seed=cfg.seed,
            device=cfg.device,
            checkpoint_dir=run.checkpoints,
            checkpoint_every=s.checkpoint_every,
            progress=progress,
            resume=run.checkpoints.exists(),
        )
        history = trainer.train()
    state = {k: v.detach().contiguous().cpu() for k, v in supernet.state_dict().items()}
    save_file(state, str(run.supernet_weights))
    return history


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
        return load_cost_model(self.cfg, space_entry(self.cfg), progress=False)


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
            return SupernetEvaluator(net, task, cost.costs)
        return finetune_evaluator(cfg, net, task, cost)


@dataclass(frozen=True)
class StrategyFactory:
    """Builds the configured strategy, wrapped in the budget filter."""

    ctx: RunContext

    def __call__(self):
        from nas.strategies import BudgetFilter, Objective, make_strategy

        cfg = self.ctx.cfg
        space = space_entry(cfg).space()
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
    """What the predictor-guided strategy needs: weak labels, an encoder, a predictor."""
    from nas.evaluators import SupernetEvaluator
    from predictors import make_predictor
    from predictors.encoders import SpaceEncoder

    cfg = ctx.cfg
    space = space_entry(cfg).space()

    def weak_fn(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        net = ctx.supernet()
        ev = SupernetEvaluator(net, build_task(cfg, net))
        scores = ev.score_many(samples, progress=ctx.progress)
        c = cost.costs(samples, ("latency_ms", "params"))
        return np.stack([scores, c["latency_ms"], c["params"]], 1)

    return {
        "weak_fn": weak_fn,
        "encoder": SpaceEncoder(space, "onehot", cost_model=cost),
        "predictor_factory": lambda: make_predictor("lambdarank", seed=cfg.seed, device=cfg.device),
        "cost_fn": cost.costs,
    }


# -- the whole job ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    run: RunDir
    trials: int
    chosen: dict[str, Any] | None
    seconds: float


def run_search(
    cfg: ExperimentConfig,
    *,
    run: RunDir | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run (or, given an existing `run`, resume) the experiment end to end."""
    t0 = time.perf_counter()
    resume = run is not None
    run = run or RunDir.create(cfg)
    log.info("run directory: %s", run.path)
    entry = space_entry(cfg)
    space = entry.space()
    cost = load_cost_model(cfg, entry, progress)
    check_budgets(cfg, space, cost)
    supernet = build_supernet(cfg, entry)
    task = build_task(cfg, supernet)
    train_supernet(cfg, run, supernet, task, progress)
    ctx = RunContext(json.dumps(cfg.model_dump(mode="json")), str(run.path), progress)
    if cfg.search.kind == "oneshot":
        from nas.oneshot_job import run_oneshot

        run_oneshot(cfg, run, supernet, task, cost, progress)
    else:
        from nas.ray_tune import RaySettings, StrategySearcher, run_tune

        r = cfg.ray
        settings = RaySettings(
            address=ray_address or r.address,
            num_cpus=r.num_cpus,
            cpus_per_trial=r.cpus_per_trial,
            gpus_per_trial=r.gpus_per_trial,
            max_concurrent=r.max_concurrent,
            object_store_mb=r.object_store_mb,
            asha=r.asha,
        )
        searcher = StrategySearcher(StrategyFactory(ctx), list(cfg.search.objectives))
        run_tune(
            searcher,
            EvaluatorFactory(ctx),
            run.path,
            cfg.search.num_trials,
            settings,
            cfg.search.strategy,
            resume=resume,
        )
    from nas.report import finish_run

    chosen = finish_run(cfg, run, supernet, cost, entry)
    return SearchResult(run, len(_trial_ids(run)), chosen, time.perf_counter() - t0)


def _trial_ids(run: RunDir) -> list[str]:
    from nas.trials import TrialStore

    return TrialStore(run.path).ids()
