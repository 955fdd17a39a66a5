"""Experiment configs: the YAML a user writes, validated into frozen objects.

pydantic parses at the boundary only (unknown keys are errors); every error
becomes one `ConfigError` line that names the key, what was given and what is
allowed. `schema_reference()` renders the same schema as the README's config
reference, so the docs cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nas.errors import ConfigError
from nas.io import SAFE_COMPONENT

if TYPE_CHECKING:  # imported where used: the packages of both load torch
    from nas.strategies.oneshot_settings import OneShotSettings
    from nas.training.settings import DistributedSettings, TrainerConfig

#: An experiment name becomes a directory under runs_dir: one path component.
NAME_PATTERN = rf"^{SAFE_COMPONENT}$"


class _Section(BaseModel):
    # strict: YAML already gives typed values, so `steps: true` or `seed: "3"` is a mistake
    # to report, not a value to coerce (pydantic would read true as 1)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DistillConfig(_Section):
    """Distillation from a teacher (SnapFusion / BK-SDM style output and feature losses)."""

    teacher: str = Field(
        "supernet_max",
        description="'supernet_max' (the supernet's largest subnet) or a diffusers model directory",
    )
    out_weight: float = Field(1.0, ge=0, description="weight of the output-level loss")
    feat_weight: float = Field(0.0, ge=0, description="weight of the feature-level loss")


class TaskConfig(_Section):
    """The proxy task that scores architectures."""

    kind: Literal["digits", "image_folder"] = Field(
        "digits", description="digits (scikit-learn's, no download) or image_folder"
    )
    path: str | None = Field(None, description="image_folder: directory of images")
    captions: str | None = Field(
        None, description="image_folder: safetensors file of caption embeddings"
    )
    vae: str | None = Field(
        None, description="image_folder: local diffusers AutoencoderKL directory (latent space)"
    )
    batch_size: int = Field(32, ge=1, description="training batch size")
    val_timesteps: int = Field(8, ge=1, description="fixed timesteps of the validation loss")
    val_images: int | None = Field(
        None, ge=1, description="validation images used (all held-out ones if null)"
    )
    distill: DistillConfig | None = Field(None, description="distil from a teacher")

    @model_validator(mode="after")
    def _paths(self) -> TaskConfig:
        if self.kind == "image_folder" and not self.path:
            raise ValueError("task.path is required when task.kind is image_folder")
        return self


class LatencyConfig(_Section):
    """Which latency table prices the architectures."""

    backend: str = Field("onnxruntime", description="torch, onnxruntime, tflite, executorch or adb")
    device: str | None = Field(
        None, description="table name of the device (default: this host, e.g. cpu-x86_64)"
    )
    root: str | None = Field(None, description="tables directory (default: the shipped tables)")
    measure_missing: bool = Field(
        True, description="measure keys the table lacks before searching (host backends only)"
    )
    threads: int = Field(1, ge=1, description="threads of a measurement (a new table only)")
    warmup: int = Field(10, ge=0, description="warm-up runs per key (a new table only)")
    runs: int = Field(50, ge=1, description="timed runs per key (a new table only)")
    serial: str | None = Field(None, description="adb: the device's serial")
    calibrated: bool | None = Field(
        None,
        description="null: predict with the table's calibration for this space when there is "
        "one (`nas latency validate` fits it on random archs and checks it on searched ones), "
        "else the raw table sum; true: require it; false: the raw table sum",
    )


class DistributedConfig(_Section):
    """Data-parallel supernet training and one-shot search (Ray Train, torch.distributed)."""

    backend: Literal["ray"] = Field(
        "ray", description="ray: Ray Train's TorchTrainer (gloo on CPU, nccl on GPU)"
    )
    num_workers: int = Field(
        ..., ge=1, description="worker processes; each takes batch_size / num_workers rows"
    )
    use_gpu: bool = Field(False, description="one GPU per worker (nccl); false: CPU (gloo)")
    max_failures: int = Field(
        0, ge=0, description="restarts of a failed worker group from the latest checkpoint"
    )


class SupernetConfig(_Section):
    """Supernet training (sandwich rule, in-place distillation, fake-quant on)."""

    steps: int = Field(200, ge=0, description="training steps (0: use the weights as they are)")
    batch_size: int = Field(32, ge=1, description="images per step")
    n_random: int = Field(2, ge=0, description="random subnets per step besides max and min")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    checkpoint_every: int = Field(
        50,
        ge=1,
        description="steps between checkpoints (also the snapshots a rollback returns to)",
    )
    grad_clip: float | None = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="clip the total gradient norm of each step to this (null: no clipping)",
    )
    # 10, not a fraction of `steps`: what warm-up tames is AdamW's first updates (±lr on
    # every weight while its second-moment estimate holds a few samples), whatever the run
    # length; 10 steps are 12% of the default experiment's 80 and cheap in a longer run
    warmup_steps: int = Field(
        10,
        ge=0,
        description="linear lr warm-up: step i (0-based) runs at lr·min(1, (i+1)/warmup_steps); "
        "0: none",
    )
    max_bad_steps: int = Field(
        3,
        ge=1,
        description="non-finite steps (skipped) in a row before a rollback to the last "
        "checkpoint with the lr halved",
    )
    max_rollbacks: int = Field(
        3,
        ge=0,
        description="rollbacks before training stops with an error (lower supernet.lr then)",
    )
    teacher: str | None = Field(
        None, description="diffusers model directory whose weights initialise the supernet"
    )
    distributed: DistributedConfig | None = Field(
        None,
        description="data-parallel workers of the supernet's training and of the one-shot "
        "search (null: one process)",
    )

    @model_validator(mode="after")
    def _split(self) -> SupernetConfig:
        n = self.distributed.num_workers if self.distributed is not None else 1
        if self.batch_size % n:
            raise ValueError(
                f"supernet.batch_size={self.batch_size} does not split evenly over "
                f"supernet.distributed.num_workers={n} workers (each takes batch_size / "
                f"num_workers rows); use a multiple of {n}"
            )
        return self

    def trainer_config(self, seed: int) -> TrainerConfig:
        """The sandwich trainer's config of this section (the experiment gives the seed).

        Every field but `teacher` (which initialises the supernet, not its training) and
        `distributed` (where it runs, not what it computes) has a `TrainerConfig` field
        of the same name; the rest keep TrainerConfig's defaults.
        """
        from nas.training.settings import TrainerConfig

        return TrainerConfig(**self.model_dump(exclude={"teacher", "distributed"}), seed=seed)

    def distributed_settings(self) -> DistributedSettings | None:
        """The data-parallel settings of this section (None: one process)."""
        from nas.training.settings import DistributedSettings

        d = self.distributed
        return None if d is None else DistributedSettings(**d.model_dump())


class FinetuneConfig(_Section):
    steps: int = Field(40, ge=1, description="fine-tuning steps of each strongly evaluated arch")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)


class OneShotConfig(_Section):
    """Differentiable search (DQSS quant strategies, PaS widths, depth gates)."""

    target_ms: float = Field(..., gt=0, description="latency target of the found arch (ms)")
    lam: float = Field(1.0, ge=0, description="weight of the latency penalty")
    lam_schedule: Literal["constant", "linear", "auto"] = Field(
        "auto", description="auto raises λ while the expected latency is over the target"
    )
    penalty: Literal["hinge", "log"] = Field(
        "hinge", description="hinge: λ·max(0, E[T]/T − 1); log: λ·|log(E[T]/T)|"
    )
    mode: Literal["joint", "ptq"] = Field(
        "joint", description="joint: weights and logits in one pass; ptq: weights frozen"
    )
    steps: int = Field(100, ge=1)
    calibrate_steps: int = Field(
        0,
        ge=0,
        description="ptq: first calibrate each quant strategy on its own for this many steps; "
        "the search then learns the strategy logits alone",
    )
    warmup_steps: int = Field(20, ge=0, description="steps with architecture logits frozen")
    lr_arch: float = Field(5e-2, gt=0)
    policies: list[Literal["dqss", "pas", "depth"]] = Field(
        default_factory=lambda: ["dqss", "pas", "depth"]
    )
    discretize: Literal["argmax", "sampled", "scored"] = Field(
        "argmax",
        description="argmax of every label; sampled: the most probable of 512 draws within "
        "±3% of the target; scored: of the 16 most probable such draws, the best on the supernet",
    )

    @model_validator(mode="after")
    def _calibrate(self) -> OneShotConfig:
        if self.calibrate_steps and self.mode != "ptq":
            raise ValueError(
                f"search.oneshot.calibrate_steps={self.calibrate_steps} needs mode: ptq (the "
                "weights stay frozen); set mode: ptq or calibrate_steps: 0"
            )
        return self

    def settings(self, *, batch_size: int, seed: int) -> OneShotSettings:
        """This section as the search's settings, converted once: every key but `policies`
        has a settings field of its name (what the section lacks keeps the search's
        default); `policies` become the label kinds they search."""
        from nas.strategies.oneshot_settings import POLICY_KINDS, OneShotSettings

        return OneShotSettings(
            **self.model_dump(exclude={"policies"}),
            search=tuple(POLICY_KINDS[p] for p in self.policies),
            batch_size=batch_size,
            seed=seed,
        )


class SearchConfig(_Section):
    """What is searched and how."""

    kind: Literal["sample", "oneshot"] = Field(
        "sample", description="sample: ask/tell strategy through Ray Tune; oneshot: DQSS + PaS"
    )
    strategy: str = Field(
        "predictor", description="predictor, random, evolution, nsga2 or tpe (kind: sample)"
    )
    strategy_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the strategy"
    )
    objectives: dict[str, Literal["min", "max"]] = Field(
        default_factory=lambda: {"val_loss": "min", "latency_ms": "min"},
        description="metric or cost name → min or max; the first is the primary (quality) one",
    )
    num_trials: int = Field(16, ge=1, description="strongly evaluated architectures")
    max_consecutive_failures: int = Field(
        3, ge=1, description="stop the search when this many trials in a row fail the same way"
    )
    evaluator: Literal["supernet", "finetune"] = Field(
        "finetune", description="supernet (inherited weights) or finetune (extract, train, score)"
    )
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    oneshot: OneShotConfig | None = None

    @model_validator(mode="after")
    def _oneshot(self) -> SearchConfig:
        if self.kind == "oneshot" and self.oneshot is None:
            raise ValueError(
                "search.oneshot (with target_ms) is required when search.kind is oneshot"
            )
        return self


class RayConfig(_Section):
    """Where trials run: local Ray by default, `address` joins a cluster."""

    address: str | None = Field(None, description="ray cluster address (host:port); null = local")
    num_cpus: int = Field(2, ge=1, description="CPUs of the local Ray instance")
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0)
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    object_store_mb: int = Field(256, ge=64, description="object store of the local Ray (MB)")
    asha: bool = Field(False, description="ASHA early stopping (finetune evaluator)")


class QualityConfig(_Section):
    """Generated samples and the generation-quality metrics (`nas.quality`)."""

    samples: int = Field(
        100, ge=2, description="images generated per architecture for the quality metrics"
    )
    steps: int = Field(20, ge=1, description="sampler steps per image")
    scheduler: Literal["ddim", "ddpm", "dpmsolver", "euler"] = Field(
        "ddim", description="diffusers scheduler of the sampler (DDIM: deterministic)"
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="quality metrics recorded on every trial besides the objectives "
        "(cond_accuracy, fid, clip_score)",
    )
    clip_model: str | None = Field(
        None, description="image_folder: local CLIP directory (fid, clip_score)"
    )
    grid: bool = Field(True, description="write samples.png at the end of a run")


class ExportConfig(_Section):
    top_k: int = Field(1, ge=1, description="architectures of the front to export")
    measure: bool = Field(True, description="measure the chosen arch end to end")


class ExperimentConfig(_Section):
    """An experiment: `nas search <this file>`."""

    name: str = Field(
        ...,
        pattern=NAME_PATTERN,
        description="experiment name (the run directory's parent): letters, digits, _ . -",
    )
    space: str = Field(..., description="registered search space, e.g. mobile_unet")
    device: str = Field("cpu", description="torch device of training and evaluation")
    seed: int = 0
    runs_dir: str = Field("runs", description="where run directories are created")
    task: TaskConfig = Field(default_factory=TaskConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    budgets: dict[Literal["latency_ms", "params", "macs", "bytes"], float] = Field(
        default_factory=dict, description="upper bounds on predicted costs"
    )
    supernet: SupernetConfig = Field(default_factory=SupernetConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _budgets_and_objectives(self) -> ExperimentConfig:
        d = self.supernet.distributed
        if d is not None and self.search.kind == "oneshot" and self.task.batch_size % d.num_workers:
            raise ValueError(
                f"task.batch_size={self.task.batch_size} (the one-shot search's batch) does not "
                f"split evenly over supernet.distributed.num_workers={d.num_workers} workers; "
                f"use a multiple of {d.num_workers}"
            )
        for k, v in self.budgets.items():
            if not v > 0:  # also refuses NaN
                raise ValueError(f"budgets.{k} must be a positive number, got {v!r}")
        if not self.search.objectives:
            raise ValueError(
                "search.objectives is empty; name at least the quality metric, e.g. "
                "{val_loss: min, latency_ms: min}"
            )
        return self


#: The config keys that hold a user's paths: resolved once, against the working directory
#: of the command that read the YAML, so nothing later (a Ray worker starts elsewhere)
#: depends on where it runs.
PATH_KEYS = (
    ("runs_dir",),
    ("latency", "root"),
    ("quality", "clip_model"),
    ("supernet", "teacher"),
    ("task", "path"),
    ("task", "captions"),
    ("task", "vae"),
    ("task", "distill", "teacher"),
)
#: A value of a path key that is a name, not a path.
NOT_PATHS = {("task", "distill", "teacher"): "supernet_max"}


def resolve_paths(cfg: ExperimentConfig, base: str | Path | None = None) -> ExperimentConfig:
    """`cfg` with every relative path of `PATH_KEYS` made absolute against `base` (cwd)."""
    root = Path(base) if base is not None else Path.cwd()
    doc = cfg.model_dump(mode="json")
    for keys in PATH_KEYS:
        parent = doc
        for k in keys[:-1]:
            parent = parent.get(k) or {}
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if value and value != NOT_PATHS.get(keys):
            parent[keys[-1]] = str((root / Path(value).expanduser()).resolve())
    return ExperimentConfig.model_validate(doc)


def with_workers(
    cfg: ExperimentConfig, workers: int, source: str = "--workers"
) -> ExperimentConfig:
    """`cfg` with ``supernet.distributed.num_workers`` = `workers` (the section created
    with its defaults if absent), validated again: the batches must split over them.

    The worker count is not part of a training's trajectory, so a run resumes with any.
    """
    doc = cfg.model_dump(mode="json")
    doc["supernet"]["distributed"] = {
        **(doc["supernet"]["distributed"] or {}),
        "num_workers": workers,
    }
    return parse_config(doc, source)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "[key]") or "(top level)"


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc`'s parent (for unknown-key messages)."""
    cur: Any = model
    for part in loc[:-1]:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cur = next(
            (
                a
                for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if cur is None:
            return []
    return sorted(getattr(cur, "model_fields", {}))


def parse_config(doc: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a parsed YAML document; the first problem becomes one `ConfigError` line."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: an experiment is a mapping of keys, got {type(doc).__name__}")
    try:
        return ExperimentConfig.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        key = _where(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed(ExperimentConfig, err["loc"])
            raise ConfigError(
                f"{source}: unknown key {key!r}; allowed here: {', '.join(allowed)}"
            ) from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: key {key!r} is required") from None
        if err["type"] == "string_pattern_mismatch" and key == "name":
            raise ConfigError(
                f"{source}: key 'name' is the run directory's parent, so it must be one path "
                f"component of letters, digits, '_', '.' or '-' (given: {err.get('input')!r})"
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        given_s = "" if isinstance(given, dict) else f" (given: {given!r})"
        raise ConfigError(f"{source}: key {key!r}: {msg}{given_s}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment file {p} does not exist; see experiments/ for examples")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); save the "
            "experiment as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    if doc is None:
        raise ConfigError(f"{p} is empty; see experiments/ for examples")
    return resolve_paths(parse_config(doc, str(p)))


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _type_name(ann: Any) -> str:
    """A readable type for the reference table (no `|`: it would split a Markdown cell)."""
    args = getattr(ann, "__args__", None)
    if getattr(ann, "__origin__", None) is Literal:
        return " or ".join(repr(a) for a in args)
    if args and type(ann).__name__ == "UnionType":
        return " or ".join(_type_name(a) for a in args)
    if args:
        return f"{ann.__origin__.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "null" if ann is type(None) else getattr(ann, "__name__", str(ann))


def schema_reference() -> str:
    """A Markdown reference of every key, its type, default and description."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            subs = [
                a
                for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            key = f"{prefix}{name}"
            if subs:
                walk(subs[0], key + ".")
                continue
            tname = _type_name(ann)
            default = (
                "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            )
            lines.append(f"| `{key}` | {tname} | {default} | {f.description or ''} |")

    walk(ExperimentConfig, "")
    return "\n".join(lines) + "\n"
