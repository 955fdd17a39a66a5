"""The DDPM ε-prediction objective (Ho et al., "Denoising Diffusion Probabilistic Models",
NeurIPS 2020), eq. 14, the simplified loss

    L_simple = E_{t, x0, ε} ‖ ε − ε_θ(√ᾱ_t · x0 + √(1 − ᾱ_t) · ε, t) ‖²,

with t uniform over the training timesteps {0, …, T−1} (diffusers' zero-based
indexing of Ho et al.'s 1…T), ε ~ N(0, I) and ᾱ_t the cumulative product of
1 − β_t. The β schedule and the forward process q(x_t | x0) are diffusers'
`DDPMScheduler` (its ``betas`` / ``alphas_cumprod`` and `add_noise`), so a model
trained here samples with that scheduler unchanged. Everything is batched: one
draw of (t, ε) per sample, no per-sample Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.tasks.base import Batch, denoise
from nas.tasks.util import eps_part

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

#: β schedules `DDPMScheduler` implements.
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


@dataclass(frozen=True)
class DiffusionObjective:
    """Forward noising and the L_simple loss for one β schedule (frozen: a value).

    ``schedule`` is a `DDPMScheduler` ``beta_schedule``: ``"linear"`` (DDPM's, β from
    ``beta_start`` to ``beta_end``), ``"scaled_linear"`` (Stable Diffusion's, use
    ``beta_start=0.00085, beta_end=0.012``), ``"squaredcos_cap_v2"`` (the cosine schedule
    of Nichol & Dhariwal 2021) or ``"sigmoid"``.
    """

    num_train_timesteps: int = 1000
    schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    scheduler: DDPMScheduler = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown noise schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}"
            )
        if int(self.num_train_timesteps) < 1:
            raise ConfigError(
                f"num_train_timesteps={self.num_train_timesteps}; it must be a positive int "
                "(DDPM uses 1000)"
            )
        from diffusers import DDPMScheduler  # lazy: diffusers is heavy and `nas` stays lean

        sched = DDPMScheduler(
            num_train_timesteps=int(self.num_train_timesteps),
            beta_schedule=self.schedule,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
        )
        object.__setattr__(self, "scheduler", sched)

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t for t = 0 … T−1, shape (T,)."""
        return self.scheduler.alphas_cumprod

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε for x0, ε (B, …) and integer t (B,)."""
        return self.scheduler.add_noise(x0, eps, t.to(x0.device))

    def evenly_spaced(self, k: int) -> Tensor:
        """`k` timesteps spread evenly over [0, T): the midpoints of k equal bins, (k,) int64."""
        if k < 1:
            raise ConfigError(f"val_timesteps={k}; it must be at least 1")
        T = int(self.num_train_timesteps)
        return ((torch.arange(k, dtype=torch.float64) + 0.5) * T / k).long().clamp(0, T - 1)

    def noisy(
        self, x0: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A noisy version of `x0` (B, C, H, W): ``(x_t, t, ε)`` with t ~ U{0, …, T−1} (B,).

        t and ε are drawn on the generator's device (the default generator: x0's), then
        moved to x0's device, so a seeded CPU generator gives the same draws for any
        device x0 lives on.
        """
        dev = generator.device if generator is not None else x0.device
        b = x0.shape[0]
        t = torch.randint(0, int(self.num_train_timesteps), (b,), generator=generator, device=dev)
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        t, eps = t.to(x0.device), eps.to(x0.device)
        return self.add_noise(x0, eps, t), t, eps

    def mse(self, pred: Tensor, eps: Tensor) -> Tensor:
        """‖ε − ε_θ‖² averaged over all elements (ε part of a learned-σ output)."""
        return F.mse_loss(eps_part(pred, eps.shape[1]).float(), eps.float())

    def loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> Tensor:
        """L_simple of `model` on ``batch["x0"]`` (with ``batch["context"]`` if present)."""
        x_t, t, eps = self.noisy(batch["x0"], generator)
        pred = denoise(model, x_t, t, batch.get("context"))  # (B, C or 2C, H, W)
        return self.mse(pred, eps)
