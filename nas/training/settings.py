"""The hyperparameters of a sandwich run, validated once, as a checkpoint records them.

`TrainerConfig` is what `nas.training.sandwich.SupernetTrainer` takes whole and what
each of its checkpoints stores under ``config``; `TRAJECTORY_FIELDS` says which of its
fields a resumed run must share with the checkpoint. `DistributedSettings` says how many
data-parallel workers run it (`nas.training.distributed`); it is not part of the
trajectory, so a checkpoint resumes with any worker count. This module imports no torch:
`nas.config` converts the experiment's ``supernet:`` section into these values
(`SupernetConfig.trainer_config`, `SupernetConfig.distributed_settings`) without the
training machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nas.errors import ConfigError

#: Config fields that change the training trajectory: a checkpoint resumes only if
#: they are equal. The others (steps, checkpoint/log/validation cadence) may change.
TRAJECTORY_FIELDS = (
    "batch_size",
    "n_random",
    "lr",
    "weight_decay",
    "distill_weight",
    "quant",
    "grad_clip",
    "seed",
    "warmup_steps",
    "max_bad_steps",
)
#: What a checkpoint written before a field existed implicitly used (the old trainer had
#: no warm-up); a field absent from this table and from a checkpoint is not compared.
_LEGACY_FIELDS = {"warmup_steps": 0}


@dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of a sandwich run (what a checkpoint records).

    `checkpoint_every` is also the cadence of the in-memory snapshots a rollback returns
    to; `val_every` > 0 validates the max and min sub-networks every that many steps;
    `warmup_steps` (0: none), `max_bad_steps` and `max_rollbacks` set the stability
    policy described in `nas.training.sandwich`.
    """

    steps: int
    batch_size: int = 32
    n_random: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    distill_weight: float = 1.0
    quant: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    val_every: int = 0
    warmup_steps: int = 0
    max_bad_steps: int = 3
    max_rollbacks: int = 3

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "max_bad_steps": self.max_bad_steps,
        }
        nonneg = {
            "steps": self.steps,
            "n_random": self.n_random,
            "seed": self.seed,
            "val_every": self.val_every,
            "warmup_steps": self.warmup_steps,
            "max_rollbacks": self.max_rollbacks,
        }
        for name, v in positive.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer ≥ 1, got {v!r}")
        for name, v in nonneg.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name} must be an integer ≥ 0, got {v!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or self.distill_weight < 0:
            raise ConfigError(
                f"weight_decay and distill_weight must be ≥ 0, got {self.weight_decay!r} "
                f"and {self.distill_weight!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"grad_clip must be > 0 or None (no clipping), got {self.grad_clip!r}"
            )

    def trajectory_differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """``"<field>: checkpoint <theirs> vs trainer <ours>"`` for each trajectory field
        in which `recorded` (a checkpoint's ``config``) differs from this config.

        A field the checkpoint lacks counts as its legacy value (`_LEGACY_FIELDS`), or
        as equal when it has none.
        """
        mine = asdict(self)
        theirs = {k: recorded.get(k, _LEGACY_FIELDS.get(k, mine[k])) for k in mine}
        return [
            f"{k}: checkpoint {theirs[k]!r} vs trainer {mine[k]!r}"
            for k in TRAJECTORY_FIELDS
            if theirs[k] != mine[k]
        ]


#: Where data-parallel workers can run (`DistributedSettings.backend`).
BACKENDS = ("ray",)


@dataclass(frozen=True)
class DistributedSettings:
    """Data parallelism of the supernet's training and of the one-shot search.

    `num_workers` processes (Ray Train workers, one torch.distributed rank each) split
    every global batch of `TrainerConfig.batch_size` rows evenly, so the batch size must
    be a multiple of every worker count a run uses. `use_gpu` gives each worker one GPU
    and the nccl backend (else gloo on CPU). `max_failures` is how many times a failed
    worker group is restarted from the latest checkpoint before the run stops.
    """

    backend: str = "ray"
    num_workers: int = 1
    use_gpu: bool = False
    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"distributed backend {self.backend!r} is unknown; use one of {list(BACKENDS)}"
            )
        for name, low in (("num_workers", 1), ("max_failures", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"distributed {name} must be an integer ≥ {low}, got {v!r}")

    def check_batch(self, batch_size: int) -> None:
        """ConfigError unless `batch_size` splits evenly over the workers."""
        if batch_size % self.num_workers:
            raise ConfigError(
                f"batch_size {batch_size} does not split evenly over {self.num_workers} "
                "workers; each worker takes batch_size / num_workers rows of every batch, "
                f"so pick a multiple of {self.num_workers} (e.g. "
                f"{max(1, batch_size // self.num_workers) * self.num_workers}) or another "
                "worker count"
            )


__all__ = ["BACKENDS", "TRAJECTORY_FIELDS", "DistributedSettings", "TrainerConfig"]
