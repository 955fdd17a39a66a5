"""Supernet training with the sandwich rule and in-place distillation.

Paper: Yu & Huang, "Universally Slimmable Networks and Improved Training
Techniques", ICCV 2019 (arXiv:1903.05134), Algorithm 1 and its two training
techniques, the *sandwich rule* and *in-place distillation*. Each step draws one
batch and one noisy input (x_t, t, target), shared by every sub-network, and
accumulates the gradient of

    L = ℓ(f_max(x_t, t), target)
      + Σ_{s ∈ {min} ∪ R} [ ℓ(f_s(x_t, t), target) + λ · ‖f_s(x_t, t) − sg(f_max(x_t, t))‖² ]

before one AdamW step, where ℓ is the task's ε-prediction MSE (DDPM's L_simple),
R holds `n_random` samples of the space, sg stops the gradient and λ is
`distill_weight`. The max and min sub-networks bound the space from both ends
(the "sandwich"); distilling from the max output on the *same* noisy input is
what makes the students' targets consistent, hence the trainer draws the noise
itself (`nas.training.objective`). Unlike the paper, whose students learn from
the max network's predictions only, the students here keep the ground-truth
term beside the distillation term (λ weighs the two).
Each sub-network runs with its own per-layer quant schemes (fake-quant, STE).

Gradients reach `supernet.weight_parameters()` only: architecture parameters
are frozen during the step, so a differentiable policy's optimizer sees none of
the sandwich's gradient.

Stability (not in the paper; what keeps a short, high-lr run from dying):

* linear warm-up: the lr of step i (0-based) is lr · min(1, (i + 1) / warmup_steps);
  the first AdamW updates are ±lr on every weight whatever the gradient's size
  (the second-moment estimate holds one sample), and ramping them in is cheap;
* non-finite steps are skipped: when a loss (max, min, a random student, a
  distillation term) or the total gradient norm is NaN/inf the step applies
  nothing (gradients zeroed, no optimizer step, the batch is spent) and says so
  in the log and in the history (``skipped: true``);
* after `max_bad_steps` skipped steps in a row the trainer rolls back to the last
  good snapshot (an in-memory copy of weights, optimizer and RNG states taken
  with every checkpoint, and at the start) and replays from there with the lr
  halved; after `max_rollbacks` rollbacks it gives up (`TrainingDivergedError`).
  The lr scale, the rollbacks and the snapshot's step are in the checkpoints.

Determinism: the data stream is `task.batches(batch_size, seed)`, the noise of
step i comes from a CPU `torch.Generator` seeded by (seed, i), the random samples
from a numpy Generator seeded by (seed, i) too (`nas.training.util.step_rng`).
Checkpoints (`nas.training.checkpoint`) hold the rest, so k steps + resume + (N − k)
steps equals N steps bit for bit.

Data parallelism (`parallel`, see `nas.training.distributed`): every rank draws the
same global batch, noise and sub-networks of a step (all are functions of (seed, step)),
runs the sandwich on its rows of the batch, and the gradients are averaged across ranks
before clipping and the AdamW step, so every rank applies the same update; the losses
in the history are the global batch's. Only rank 0 writes checkpoints, validates and
logs.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import ConfigError, MqnasError
from nas.logs import progress_bar
from nas.quant import set_quant_enabled
from nas.supernet import Supernet
from nas.tasks.base import Batch, Task, denoise
from nas.tasks.util import eval_mode
from nas.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_compatible,
    flatten_optimizer,
    latest_checkpoint,
    read_checkpoint,
    unflatten_optimizer,
    write_checkpoint,
)
from nas.training.objective import noising_of, noisy_batch, task_mse
from nas.training.settings import TRAJECTORY_FIELDS, TrainerConfig
from nas.training.util import device_of, frozen, isolated_rng, step_generator, step_rng

if TYPE_CHECKING:  # torch.distributed is loaded only by data-parallel runs
    from nas.training.distributed import DataParallel

log = logging.getLogger(__name__)
#: What ranks other than 0 log with: rank 0 speaks for the group, the others only of errors.
_replica_log = logging.getLogger(f"{__name__}.replica")
_replica_log.setLevel(logging.ERROR)


#: How a checkpoint's random sub-networks were drawn (its ``rng.subnets``): from a numpy
#: Generator seeded by (seed, step) for each step (`nas.training.util.step_rng`).
SUBNET_SAMPLING = "per_step"


class TrainingDivergedError(MqnasError):
    """Supernet training kept producing non-finite losses or gradients after its rollbacks."""


class SupernetTrainer:
    """Train a supernet's shared weights with the sandwich rule (see the module docstring).

    `config` holds the run's hyperparameters (`TrainerConfig`; an experiment's come from
    `SupernetConfig.trainer_config`). `checkpoint_dir` (a run's ``checkpoints/``)
    receives a checkpoint every `config.checkpoint_every` steps and at the end (the
    `keep_checkpoints` latest are kept; None: all); `resume=True` (or `resume(dir)`)
    continues from its latest one. `config.val_every` > 0 runs `task.validate` on the
    max and min sub-networks every that many steps (keys ``max/<metric>``,
    ``min/<metric>`` of that step's history entry).

    `config.warmup_steps`, `max_bad_steps` and `max_rollbacks` set the stability policy
    of the module docstring; the rollback snapshots are taken at the `checkpoint_every`
    cadence whether or not `checkpoint_dir` is set.

    `parallel` makes this trainer one rank of a data-parallel group (module docstring;
    `nas.training.distributed.train_supernet_parallel` sets it up); `config.batch_size`
    is then the global batch, split evenly over the ranks. `on_step` is called with
    each history entry as it is appended (progress reporting).
    """

    def __init__(
        self,
        supernet: Supernet,
        task: Task,
        config: TrainerConfig,
        *,
        device: str | torch.device | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        resume: bool = False,
        keep_checkpoints: int | None = 2,
        parallel: DataParallel | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(
                f"SupernetTrainer takes its hyperparameters as one TrainerConfig, got "
                f"{type(config).__name__}; pass TrainerConfig(steps=..., lr=..., ...) "
                "(from nas.training), or cfg.supernet.trainer_config(cfg.seed) for an "
                "experiment's config"
            )
        self.config = config
        self.device = torch.device(device) if device is not None else device_of(supernet)
        self.supernet = supernet.to(self.device)
        self.task = task
        self.noising = noising_of(task)
        if getattr(task, "teacher", None) is not None:
            raise ConfigError(
                f"task {type(task).__name__} distils from an external teacher, which sandwich "
                "training does not use (its students distil from the max sub-network in "
                "place); pass the base task (task.base)"
            )
        self.space = supernet.space
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        # the latest and the one before (in case the latest is damaged); None keeps all
        self.keep_checkpoints = keep_checkpoints
        self.parallel = parallel
        if parallel is not None:
            parallel.check_batch(config.batch_size)
        # rank 0 speaks for a data-parallel group: the others would repeat it word for word
        self.is_main = parallel is None or parallel.rank == 0
        self._log = log if self.is_main else _replica_log
        self.progress = progress and self.is_main
        self.on_step = on_step
        self._max = self.space.max()
        self._min = self.space.min()
        self._weights = list(supernet.weight_parameters())
        self._arch = list(supernet.arch_parameters())
        names = {id(p): n for n, p in supernet.named_parameters()}
        # the optimizer's param indices refer to this order; checkpoints record it
        self.param_names = [names.get(id(p), f"<unnamed {i}>") for i, p in enumerate(self._weights)]
        self.optimizer = torch.optim.AdamW(
            self._weights, lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        # stability state (module docstring): it survives rollbacks and is checkpointed
        self.lr_scale = 1.0  # halved by each rollback; the config's lr stays the user's
        self.bad_streak = 0  # skipped steps in a row
        self.rollbacks: list[dict[str, Any]] = []
        self._good: _Snapshot | None = None  # what a rollback returns to
        self._stream: Iterator[Batch] | None = None
        self._stream_pos = 0
        if resume:
            self.resume()

    # -- training -----------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        """Train until `steps`; return the per-step history (also kept in `self.history`).

        Each entry: ``step`` (steps done, skipped ones included), ``loss_max``,
        ``loss_min``, ``loss_rand`` (mean over the random samples; None without any),
        ``distill`` (mean distillation term of the students), ``lr`` (the step's lr, after
        warm-up and rollbacks), ``grad_norm`` (total, before clipping), ``skipped`` (the
        step was not applied: ``nonfinite`` names the culprits), ``rollbacks`` (done so
        far), ``seconds`` (wall time of the step). After a rollback the history is that
        of the snapshot again (one entry per step of the weights' trajectory); the
        skipped steps that caused it are kept in `self.rollbacks`.

        Raises `TrainingDivergedError` when the steps stay non-finite after
        `max_rollbacks` rollbacks.
        """
        cfg = self.config
        if self.step >= cfg.steps:
            return self.history
        set_quant_enabled(self.supernet, cfg.quant)
        self.supernet.train()
        if self._good is None:
            self._good = self._snapshot()
        stream = self._batches()
        bar = progress_bar(
            cfg.steps, initial=self.step, desc="supernet", unit="step", enabled=self.progress
        )
        try:
            while self.step < cfg.steps:
                batch = next(stream)
                self._stream_pos += 1
                rec = self._train_step(batch)
                self.step += 1
                if rec["skipped"]:
                    self.bad_streak += 1
                    self._log.warning(
                        "step %d: non-finite %s; step skipped (%d/%d in a row before a rollback)",
                        self.step,
                        ", ".join(f"{k}={v}" for k, v in rec["nonfinite"].items()),
                        self.bad_streak,
                        cfg.max_bad_steps,
                    )
                    if self.bad_streak >= cfg.max_bad_steps:
                        self._rollback(rec)
                        stream = self._batches()
                        bar.n = self.step
                        bar.refresh()
                        continue
                else:
                    self.bad_streak = 0
                if cfg.val_every and self.step % cfg.val_every == 0 and self.is_main:
                    rec.update(self.validate())
                self.history.append(rec)
                if self.on_step is not None:
                    self.on_step(rec)
                bar.update(1)
                bar.set_postfix(max=f"{rec['loss_max']:.4f}", min=f"{rec['loss_min']:.4f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log.info("step %d/%d %s", self.step, cfg.steps, _fmt(rec))
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    # a rollback target must not be mid-streak: replaying from weights
                    # that already fail would fail the same way
                    if self.bad_streak == 0:
                        self._good = self._snapshot()
                    if self.parallel is not None:
                        self.parallel.check_in_sync(self.supernet, self.step)
                    if self.checkpoint_dir is not None and self.is_main:
                        self.save_checkpoint()
        finally:
            bar.close()
        return self.history

    def _batches(self) -> Iterator[Batch]:
        """The task's stream positioned at the current step (replayed after a resume)."""
        if self._stream is None or self._stream_pos != self.step:
            cfg = self.config
            self._stream = iter(self.task.batches(cfg.batch_size, cfg.seed, self.device))
            if self.step:
                self._log.info("replaying %d batches of the data stream to resume it", self.step)
            for _ in range(self.step):  # data only, no model: cheap next to training
                next(self._stream)
            self._stream_pos = self.step
        return self._stream

    def lr_at(self, step: int) -> float:
        """The lr of step `step` (0-based): warm-up ramp × rollback scale × config lr.

        A function of (step, lr_scale) only, so a resumed run recomputes it exactly.
        """
        cfg = self.config
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return cfg.lr * self.lr_scale * warm

    def _train_step(self, batch: Batch) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(self.device) for k, v in batch.items()}
        gen = step_generator(cfg.seed, self.step)
        nb = noisy_batch(self.noising, batch, gen)  # x_t, target (B, C, H, W); t (B,)
        if self.parallel is not None:  # noised whole, so each row's noise is the 1-rank one
            nb = self.parallel.shard(nb)  # this rank's B / world_size rows
        rng = step_rng(cfg.seed, self.step)
        students = [self._min, *(self.space.sample(rng) for _ in range(cfg.n_random))]

        self.optimizer.zero_grad(set_to_none=True)
        task_losses: list[float] = []
        distills: list[float] = []
        names = ["min", *(f"rand{i}" for i in range(1, cfg.n_random + 1))]
        with frozen(self._arch):
            with self.supernet.activate(self._max):
                out = denoise(self.supernet, nb.x_t, nb.t, nb.context)  # (B, C or 2C, H, W)
                loss_max = task_mse(self.noising, out, nb.target)
                loss_max.backward()
            teacher = out.detach()
            for sample in students:
                with self.supernet.activate(sample):
                    out_s = denoise(self.supernet, nb.x_t, nb.t, nb.context)
                    task_loss = task_mse(self.noising, out_s, nb.target)
                    distill = F.mse_loss(out_s.float(), teacher.float())
                    (task_loss + cfg.distill_weight * distill).backward()
                task_losses.append(float(task_loss.detach()))
                distills.append(float(distill.detach()))
        losses = [float(loss_max.detach()), *task_losses, *distills]
        comm = 0.0
        if self.parallel is not None:
            # the global batch's gradient and losses: every rank then clips, checks and
            # steps on the same numbers, so the ranks' weights stay equal
            losses, comm = self.parallel.average(self._weights, losses)
        loss_max_v, task_losses = losses[0], losses[1 : 1 + len(students)]
        distills = losses[1 + len(students) :]
        grads = [p.grad for p in self._weights if p.grad is not None]
        if cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._weights, cfg.grad_clip)
        elif grads:
            norm = torch.nn.utils.get_total_norm(grads)
        else:
            norm = torch.zeros(())
        grad_norm = float(norm)
        values = {
            "loss_max": loss_max_v,
            **{f"loss_{n}": v for n, v in zip(names, task_losses)},
            **{f"distill_{n}": v for n, v in zip(names, distills)},
            "grad_norm": grad_norm,
        }
        nonfinite = {k: v for k, v in values.items() if not math.isfinite(v)}
        if nonfinite:
            # one bad batch must not poison the weights nor AdamW's moments: apply nothing
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()

        rand = task_losses[1:]
        extra = {} if self.parallel is None else {"comm_seconds": comm}
        return {
            "step": self.step + 1,
            "loss_max": values["loss_max"],
            "loss_min": task_losses[0],
            "loss_rand": float(np.mean(rand)) if rand else None,
            "distill": float(np.mean(distills)),
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": bool(nonfinite),
            "nonfinite": nonfinite,
            "rollbacks": len(self.rollbacks),
            "seconds": time.perf_counter() - t0,
            **extra,
        }

    # -- stability: snapshots and rollbacks -----------------------------------------------
    def _snapshot(self) -> _Snapshot:
        """A copy of everything a rollback restores (not the lr scale nor the rollbacks)."""
        return _Snapshot(
            step=self.step,
            model={k: v.detach().clone() for k, v in self.supernet.state_dict().items()},
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            torch_cpu=torch.get_rng_state(),
            torch_cuda=(
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
            history=tuple(self.history),
        )

    def _restore(self, snap: _Snapshot) -> None:
        self.supernet.load_state_dict(snap.model, strict=True)
        # load_state_dict keeps same-device tensors as they are: give it copies, or the
        # next steps would update the snapshot in place
        self.optimizer.load_state_dict(copy.deepcopy(snap.optimizer))
        torch.set_rng_state(snap.torch_cpu)
        if snap.torch_cuda is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(snap.torch_cuda, self.device)
        self.history = list(snap.history)
        self.step = snap.step
        self._stream = None

    def _rollback(self, rec: dict[str, Any]) -> None:
        """Return to the last good snapshot with the lr halved, or give up."""
        cfg = self.config
        reason = ", ".join(f"{k}={v}" for k, v in rec["nonfinite"].items())
        if len(self.rollbacks) >= cfg.max_rollbacks:
            raise TrainingDivergedError(
                f"supernet training diverged: {self.bad_streak} non-finite steps in a row at "
                f"step {self.step} ({reason}) after {len(self.rollbacks)} rollbacks that "
                f"halved the lr to {self.lr_at(self.step - 1):.3g}. Lower supernet.lr (now "
                f"{cfg.lr:g}), keep supernet.grad_clip set (e.g. 1.0), lengthen "
                "supernet.warmup_steps, or raise supernet.max_rollbacks; to find the layer "
                "at fault, train once with fp32-only quant options"
            )
        assert self._good is not None  # taken when train() starts
        old, new = self.lr_scale, self.lr_scale / 2
        bad = [r for r in self.history[len(self._good.history) :] if r.get("skipped")] + [rec]
        event = {
            "step": self.step,
            "to_step": self._good.step,
            "lr_scale_old": old,
            "lr_scale_new": new,
            "skipped": [{"step": r["step"], "nonfinite": r["nonfinite"]} for r in bad],
        }
        self._log.warning(
            "step %d: %d non-finite steps in a row (%s); rolling back to step %d with lr "
            "%.3g → %.3g (rollback %d/%d)",
            self.step,
            self.bad_streak,
            reason,
            self._good.step,
            cfg.lr * old,
            cfg.lr * new,
            len(self.rollbacks) + 1,
            cfg.max_rollbacks,
        )
        self._restore(self._good)
        self.lr_scale = new
        self.bad_streak = 0
        self.rollbacks.append(event)

    # -- validation ---------------------------------------------------------------------
    def validate(self, samples: dict[str, Any] | None = None) -> dict[str, float]:
        """``<name>/<metric>`` of `task.validate` for each named sample (default max, min).

        Runs in eval mode without gradients, with the run's quant setting, and leaves
        torch's global RNG as it found it.
        """
        samples = samples if samples is not None else {"max": self._max, "min": self._min}
        set_quant_enabled(self.supernet, self.config.quant)
        out: dict[str, float] = {}
        for name, sample in samples.items():
            with (
                isolated_rng(self.device),
                torch.no_grad(),
                self.supernet.activate(sample),
                eval_mode(self.supernet),
            ):
                metrics = self.task.validate(self.supernet)
            out.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
        self._log.info("validation at step %d: %s", self.step, _fmt(out))
        return out

    # -- checkpoints --------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {
            "space": {"name": self.space.name, "version": self.space.version},
            "task": getattr(self.task, "name", type(self.task).__name__),
        }

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Write ``<directory>/step_<step>`` (default: the trainer's checkpoint_dir)."""
        directory = directory if directory is not None else self.checkpoint_dir
        if directory is None:
            raise ConfigError("save_checkpoint needs a directory: pass checkpoint_dir=...")
        tensors, meta = flatten_optimizer(self.optimizer.state_dict())
        tensors["rng.torch_cpu"] = torch.get_rng_state()  # uint8 (5056,)
        if self.device.type == "cuda":
            tensors["rng.torch_cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            **self._identity(),
            "config": asdict(self.config),
            "param_names": self.param_names,
            "optimizer": meta,
            "rng": {"subnets": SUBNET_SAMPLING},
            "history": self.history,
            # the config's lr stays the user's; what rollbacks did to it is recorded here
            "stability": {
                "lr_scale": self.lr_scale,
                "bad_streak": self.bad_streak,
                "rollbacks": self.rollbacks,
                "good_step": self._good.step if self._good is not None else self.step,
            },
        }
        return write_checkpoint(
            directory,
            self.step,
            self.supernet.state_dict(),
            tensors,
            state,
            keep=self.keep_checkpoints,
        )

    def resume(self, checkpoint_dir: str | Path | None = None) -> int:
        """Load the latest checkpoint of `checkpoint_dir` (default: the trainer's); return its step.

        Raises `CheckpointError` when there is none or it is corrupt, `ConfigError` when
        it was written for another space, task, parameter set or trajectory config.
        """
        directory = checkpoint_dir if checkpoint_dir is not None else self.checkpoint_dir
        if directory is None:
            raise ConfigError("resume needs a checkpoint directory: pass checkpoint_dir=...")
        ckpt = read_checkpoint(latest_checkpoint(directory))
        snap = self._snapshot_of(ckpt)
        # written before the trainer skipped steps: no rollbacks, full lr
        stability = ckpt.state.get("stability", {})
        self._restore(snap)
        self.lr_scale = float(stability.get("lr_scale", 1.0))
        self.bad_streak = int(stability.get("bad_streak", 0))
        self.rollbacks = list(stability.get("rollbacks", []))
        self._good = snap
        good_step = int(stability.get("good_step", ckpt.step))
        if self.bad_streak and good_step != ckpt.step:
            # written mid-streak: the rollback target is the checkpoint of `good_step`
            try:
                self._good = self._snapshot_of(
                    read_checkpoint(Path(directory) / f"step_{good_step}")
                )
            except CheckpointError as e:
                self._log.warning(
                    "checkpoint %s was written during %d non-finite steps and its rollback "
                    "target (step %d) cannot be read (%s); a rollback will return to step %d "
                    "instead, so the run may differ from an uninterrupted one",
                    ckpt.path,
                    self.bad_streak,
                    good_step,
                    e,
                    ckpt.step,
                )
        if ckpt.state.get("rng", {}).get("subnets") != SUBNET_SAMPLING:
            self._log.warning(
                "checkpoint %s was written by an mqnas that drew the random sub-networks from "
                "one numpy stream; they are now drawn per step, so the steps after this "
                "resume differ from those that mqnas would have run",
                ckpt.path,
            )
        self._log.info("resumed from %s (step %d)", ckpt.path, ckpt.step)
        return ckpt.step

    def _snapshot_of(self, ckpt: Checkpoint) -> _Snapshot:
        """A checkpoint as a snapshot, checked against this trainer first."""
        try:
            check_compatible(
                ckpt,
                identity=self._identity(),
                config=self.config,
                param_names=self.param_names,
                model=self.supernet.state_dict(),
            )
            return _Snapshot(
                step=ckpt.step,
                model=ckpt.model,
                optimizer=unflatten_optimizer(ckpt.optimizer, ckpt.state["optimizer"]),
                torch_cpu=ckpt.optimizer["rng.torch_cpu"],
                torch_cuda=ckpt.optimizer.get("rng.torch_cuda"),
                history=tuple(ckpt.state["history"]),
            )
        except KeyError as e:
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} lacks {e}; it was not written by "
                "SupernetTrainer.save_checkpoint"
            ) from None


@dataclass(frozen=True)
class _Snapshot:
    """The state a rollback returns to (in memory; tensors are private copies)."""

    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    torch_cpu: Tensor
    torch_cuda: Tensor | None
    history: tuple[dict[str, Any], ...]


def _fmt(rec: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in rec.items()
        if k != "step" and not (k == "nonfinite" and not v)
    )


__all__ = ["TRAJECTORY_FIELDS", "SupernetTrainer", "TrainerConfig", "TrainingDivergedError"]
