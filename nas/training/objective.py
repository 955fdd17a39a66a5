"""The noisy inputs the sandwich rule shares across sub-networks.

In-place distillation (Yu & Huang 2019) compares every student with the max
sub-network *on the same input*. For a diffusion task the input is random
(x_t, t, ε), so the trainer, not the task, draws it — once per step — and feeds
it to every sub-network. It asks the task for its noising: the denoising tasks
carry a `nas.tasks.diffusion.DiffusionObjective` as ``task.objective``; any task
may instead define the method itself. The contract is

    noisy(x0, generator) -> (x_t, t, target)

with x0 (B, C, H, W) clean images, ``generator`` the only source of randomness,
x_t (B, C, H, W) the noised images, t (B,) integer timesteps and target
(B, C, H, W) what the model predicts — ε for DDPM ε-prediction (Ho et al. 2020,
eq. 4: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε). The task term of the loss is the
objective's ``mse(pred, target)`` when it has one, else the MSE of the ε part of
the prediction (DDPM's L_simple, eq. 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import ConfigError
from nas.tasks.base import Batch, Task
from nas.tasks.util import eps_part


@runtime_checkable
class Noising(Protocol):
    """Forward noising drawn from a caller's generator (what the sandwich trainer needs)."""

    def noisy(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, t, target) for clean `x0`, all randomness from `generator`."""
        ...


@dataclass(frozen=True)
class NoisyBatch:
    """One step's shared input: x_t (B, C, H, W), t (B,), target (B, C, H, W), context."""

    x_t: Tensor
    t: Tensor
    target: Tensor
    context: Tensor | None


def noising_of(task: Task) -> Any:
    """The object whose ``noisy(x0, generator)`` noises `task`'s batches.

    The task itself if it defines ``noisy``, else its ``objective`` (the denoising
    tasks' `DiffusionObjective`); ConfigError when it has neither.
    """
    if callable(getattr(task, "noisy", None)):
        return task
    objective = getattr(task, "objective", None)
    if callable(getattr(objective, "noisy", None)):
        return objective
    raise ConfigError(
        f"task {getattr(task, 'name', type(task).__name__)!r} ({type(task).__name__}) has "
        "neither noisy(x0, generator) -> (x_t, t, target) nor an `objective` with one; "
        "sandwich training feeds every sub-network the same noisy input, so the task must "
        "expose its noising (the denoising tasks do: DigitsDenoising, ImageFolderDenoising)"
    )


def noisy_batch(noising: Any, batch: Batch, generator: torch.Generator) -> NoisyBatch:
    """Noise `batch` once with `noising` (from `noising_of`)."""
    if "x0" not in batch:
        raise ConfigError(f"a training batch needs key 'x0'; the task gave {sorted(batch)}")
    out = noising.noisy(batch["x0"], generator)
    try:
        x_t, t, target = out
    except (TypeError, ValueError):
        raise ConfigError(
            f"{type(noising).__name__}.noisy must return a tuple (x_t, t, target), got "
            f"{type(out).__name__}"
        ) from None
    return NoisyBatch(x_t=x_t, t=t, target=target, context=batch.get("context"))


def task_mse(noising: Any, pred: Tensor, target: Tensor) -> Tensor:
    """The task term: ``noising.mse(pred, target)`` if defined, else MSE of pred's ε part."""
    mse = getattr(noising, "mse", None)
    if callable(mse):
        return mse(pred, target)
    return F.mse_loss(eps_part(pred, target.shape[1]).float(), target.float())
