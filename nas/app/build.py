"""From an experiment config to built objects, checked before any work.

`preflight` checks what can be checked on the config alone (registries, device,
objectives, strategy options, paths); `build` then builds the supernet (seeded; a
teacher's weights load here), the task and the cost model of the device's table
(measuring the keys it lacks), and refuses infeasible budgets — all before a run
directory exists, so a mistake leaves nothing behind. Ray workers rebuild what they need
with the same functions (`nas.app.pipeline.RunContext`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.app.spaces import space_entry
from nas.config import ExperimentConfig
from nas.errors import ConfigError
from nas.runs import RunDir
from nas.space import SearchSpace
from nas.supernet import SpaceEntry, Supernet

log = logging.getLogger(__name__)


# -- validation before any work ------------------------------------------------------------
#: Options of the predictor strategy that the pipeline builds itself.
INJECTED_OPTIONS = ("weak_fn", "encoder", "predictor_factory", "cost_fn")


def preflight(cfg: ExperimentConfig) -> SpaceEntry:
    """Everything about `cfg` that can be checked without building or training anything.

    Raises `ConfigError` naming the key and the fix; `run_search` calls it before a run
    directory exists, so a mistake leaves nothing behind.
    """
    from latency_tables.backends import BACKENDS
    from latency_tables.cost import COSTS
    from nas.evaluators import FinetuneEvaluator, SupernetEvaluator
    from nas.quality.base import QUALITY_METRICS
    from nas.quality.scorer import check_metrics
    from nas.strategies import STRATEGIES
    from nas.strategies.base import check_options

    if cfg.latency.backend not in BACKENDS:
        raise ConfigError(
            f"latency.backend: {cfg.latency.backend!r} is unknown; known: {BACKENDS.names()}"
        )
    check_device(cfg.device)
    s = cfg.search
    if s.kind == "sample":
        if s.strategy not in STRATEGIES:
            raise ConfigError(
                f"search.strategy: {s.strategy!r} is unknown; known: {STRATEGIES.names()}"
            )
        injected = [k for k in s.strategy_options if k in INJECTED_OPTIONS]
        if s.strategy == "predictor" and injected:
            raise ConfigError(
                f"search.strategy_options: {injected} are built by nas search itself; remove them"
            )
        check_options(s.strategy, s.strategy_options, key="search.strategy")
    evaluator = SupernetEvaluator if s.evaluator == "supernet" else FinetuneEvaluator
    quality = [k for k, m in QUALITY_METRICS.items() if cfg.task.kind in m.tasks]
    known = (*evaluator.metric_names, *quality, *COSTS)
    unknown = [k for k in s.objectives if k not in known]
    if unknown:
        raise ConfigError(
            f"search.objectives: {unknown} is not measured by the {s.evaluator} evaluator or "
            f"the cost model; objectives may be {', '.join(known)}"
        )
    clip = cfg.quality.clip_model
    check_metrics(
        [k for k in s.objectives if k in quality], cfg.task.kind, clip, "search.objectives"
    )
    check_metrics(cfg.quality.metrics, cfg.task.kind, clip, "quality.metrics")
    for key, path, kind in (
        ("supernet.teacher", cfg.supernet.teacher, "dir"),
        ("task.path", cfg.task.path, "dir"),
        ("task.captions", cfg.task.captions, "file"),
        ("task.vae", cfg.task.vae, "dir"),
        ("quality.clip_model", cfg.quality.clip_model, "dir"),
    ):
        if path and not (Path(path).is_dir() if kind == "dir" else Path(path).is_file()):
            raise ConfigError(
                f"{key}: {path} does not exist or is not a "
                f"{'directory' if kind == 'dir' else 'file'}; fix the path (relative paths are "
                "read from the working directory) or remove the key"
            )
    # last: registering the shipped spaces imports diffusers, the slowest of these checks
    from nas.app.spaces import registry

    spaces = registry()
    if cfg.space not in spaces:
        raise ConfigError(
            f"space: {cfg.space!r} is not a registered space; known: {spaces.names()}"
        )
    return spaces.get(cfg.space)


def check_device(device: str) -> None:
    """Refuse a torch device this host cannot train on, with what it can."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device: {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(
                f"device: {device!r}, but this host has no CUDA device "
                f"(torch {torch.__version__} sees none); use device: cpu here"
            )
        if d.index is not None and d.index >= n:
            raise ConfigError(
                f"device: {device!r}, but this host has {n} CUDA device(s): 0..{n - 1}"
            )
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device: {device!r}, but MPS is not available here; use cpu")
    elif d.type != "cpu":
        raise ConfigError(f"device: {device!r}: mqnas trains on cpu, cuda[:N] or mps")


# -- latency ------------------------------------------------------------------------------
def table_source(cfg: ExperimentConfig):
    """Where the experiment's table lives and how to measure into it (`latency.*`)."""
    from latency_tables.opening import BackendSettings, TableSource, host_device
    from latency_tables.table import DATA_ROOT

    lat = cfg.latency
    backend = BackendSettings(
        lat.backend,
        threads=lat.threads,
        warmup=lat.warmup,
        runs=lat.runs,
        options={"serial": lat.serial} if lat.backend == "adb" else {},
    )
    return TableSource(
        backend, device=lat.device or host_device(), root=Path(lat.root) if lat.root else DATA_ROOT
    )


def load_cost_model(cfg: ExperimentConfig, entry: SpaceEntry, progress: bool = True):
    """The cost model of the experiment's table (calibrated with `latency.calibrated`);
    measures missing keys when allowed."""
    from latency_tables.opening import open_cost_model

    return open_cost_model(
        entry,
        table_source(cfg),
        measure_missing=cfg.latency.measure_missing,
        calibrated=cfg.latency.calibrated,
        progress=progress,
        space_arg=cfg.space,
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
    """The experiment's supernet, its initial weights drawn from `cfg.seed` (a teacher's
    weights replace them when given); torch's global RNG is left as it was."""
    import torch

    device = torch.device(cfg.device)
    if device.type == "cpu":
        fork: dict[str, Any] = {"devices": []}  # the CPU generator is always forked
    else:  # init on an accelerator draws from that device's generator: fork it too
        backend = getattr(torch, device.type)
        current = getattr(backend, "current_device", lambda: 0)  # mps has one device
        index = device.index if device.index is not None else current()
        fork = {"devices": [index], "device_type": device.type}
    with torch.random.fork_rng(**fork):
        torch.manual_seed(cfg.seed)
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


def build_task_for_io(
    cfg: ExperimentConfig,
    io,
    device: str,
    supernet: Supernet | None = None,
    distill: bool = True,
):
    """The experiment's task for a denoiser with inputs `io` (an exported model, too);
    without `distill`, the data task alone (what sampling and its metrics need)."""
    t = cfg.task
    # what both kinds take from `task:` (the image folder adds where its data lives)
    common = {
        "seed": cfg.seed,
        "val_timesteps": t.val_timesteps,
        "val_images": t.val_images,
        "device": device,
    }
    if t.kind == "digits":
        from nas.tasks.digits import DigitsDenoising

        task = DigitsDenoising(io, **common)
    else:
        from nas.tasks.image_folder import ImageFolderDenoising

        task = ImageFolderDenoising(io, t.path, captions=t.captions, vae=t.vae, **common)
    if t.distill is not None and distill:
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


def load_export_job(path: str | Path, device: str | None = None, distill: bool = True):
    """An export directory read back with its experiment and task: ``(exported, cfg, task)``.

    `device` defaults to the experiment's; the model is moved there. `distill`: as in
    `build_task_for_io`.
    """
    import search_spaces  # noqa: F401  (the export allowlist resolves their classes)
    from nas.config import parse_config
    from nas.export import load_exported
    from nas.tasks.base import DenoiserIO

    ex = load_exported(path)
    meta = ex.metrics
    if "experiment" not in meta or "io" not in meta:
        raise ConfigError(
            f"{path}/arch.json records no experiment; export it with `nas export RUN "
            "--trial ID` (or from a `nas search` run) so its task is known"
        )
    cfg = parse_config(meta["experiment"], f"{path}/arch.json")
    device = device or cfg.device
    ex.model.to(device)
    io = DenoiserIO(**meta["io"])
    return ex, cfg, build_task_for_io(cfg, io, device, distill=distill)


def load_teacher_model(path: str, device: str):
    from nas.diffusers_compat import read_teacher_config

    if not Path(path).is_dir():
        raise ConfigError(
            f"task.distill.teacher: directory {path} does not exist; give a diffusers model "
            "directory or 'supernet_max'"
        )
    p, conf = read_teacher_config(path, None, None, key="task.distill.teacher")
    import diffusers

    cls = getattr(diffusers, str(conf.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ConfigError(
            f"task.distill.teacher: {p / 'config.json'} names {conf.get('_class_name')!r}, "
            "which is not a diffusers model class; give a model directory (e.g. a pipeline's "
            "unet/ or transformer/)"
        )
    # safetensors only: a pickled .bin runs code when it is loaded (read_teacher_config
    # has refused pickle-only directories already; this keeps diffusers from falling back)
    return cls.from_pretrained(p, use_safetensors=True, local_files_only=True).to(device).eval()


def load_trained(cfg: ExperimentConfig, run: RunDir, supernet: Supernet | None = None) -> Supernet:
    """The run's trained supernet (`supernet` filled in place, or a new one built)."""
    from safetensors.torch import load_file

    net = supernet if supernet is not None else space_entry(cfg.space).supernet(device=cfg.device)
    net.load_state_dict(load_file(run.supernet_weights, device=str(cfg.device)))
    return net


def quality_settings(cfg: ExperimentConfig):
    """The ``quality:`` section as `QualitySettings` (sampling seeded by the experiment)."""
    from nas.quality.scorer import QualitySettings

    q = cfg.quality
    return QualitySettings(
        samples=q.samples,
        steps=q.steps,
        scheduler=q.scheduler,
        seed=cfg.seed,
        batch_size=q.samples,  # one chunk: a longer grid run starts with the same images
        clip_model=q.clip_model,
    )


def trial_quality_metrics(cfg: ExperimentConfig) -> list[str]:
    """The quality metrics every trial records: those of the objectives, then the rest."""
    from nas.quality.base import QUALITY_METRICS

    names = [k for k in cfg.search.objectives if k in QUALITY_METRICS]
    return names + [k for k in cfg.quality.metrics if k not in names]


def quality_scorer(cfg: ExperimentConfig, task, metrics: list[str] | None = None):
    """The scorer of `metrics` (default: the trials') on `task`; None when there are none."""
    from nas.quality.scorer import QualityScorer

    metrics = trial_quality_metrics(cfg) if metrics is None else metrics
    if not metrics:
        return None
    return QualityScorer(task, metrics, quality_settings(cfg), device=cfg.device)


def finetune_evaluator(cfg: ExperimentConfig, supernet: Supernet, task, cost):
    """The strong evaluator of the experiment (`search.finetune`); ASHA gets reports."""
    from nas.evaluators import FinetuneEvaluator

    ft = cfg.search.finetune
    return FinetuneEvaluator(
        supernet,
        task,
        cost.costs,
        quality_scorer(cfg, task),
        steps=ft.steps,
        batch_size=ft.batch_size,
        lr=ft.lr,
        seed=cfg.seed,
        report_every=max(1, ft.steps // 4) if cfg.ray.asha else None,
    )


@dataclass(frozen=True)
class Built:
    """What an experiment config builds into: the objects `run_search` takes."""

    entry: SpaceEntry
    space: SearchSpace
    supernet: Supernet
    task: Any
    cost_model: Any


def build(cfg: ExperimentConfig, progress: bool = True) -> Built:
    """Check `cfg` and build its objects, in the order that fails cheapest first."""
    entry = preflight(cfg)
    supernet = build_supernet(cfg, entry)  # a teacher's weights load (or fail) here
    task = build_task(cfg, supernet)
    cost = load_cost_model(cfg, entry, progress)  # may measure: after the quick failures
    space = entry.space()
    check_budgets(cfg, space, cost)
    return Built(entry, space, supernet, task, cost)
