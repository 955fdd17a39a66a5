"""Generate images from a denoiser with a diffusers scheduler (the reverse process).

The models are trained with DDPM's ε-prediction objective on a `DDPMScheduler`'s β
schedule (`nas.tasks.diffusion`), so any diffusers scheduler built from that
config samples them unchanged: DDIM (Song et al., "Denoising Diffusion Implicit
Models", ICLR 2021, eq. 12 with η = 0: deterministic given the initial noise),
DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2), DPM-Solver++ (Lu et al.
2022) or Euler. The loop is diffusers' own (``scale_model_input`` then ``step``),
batched over all images of a chunk; only the timesteps are a Python loop.

The initial noise of all images is drawn at once on the CPU from a seeded
generator (what `DDIMPipeline` draws for the same seed), then chunked, so with
DDIM (whose steps draw no noise) the same seed gives the same images on any device
and for any chunk size.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import SCHEDULERS, Conditions
from nas.tasks.base import DenoiserIO, denoise
from nas.tasks.diffusion import DiffusionObjective
from nas.tasks.util import eps_part, eval_mode, model_device

log = logging.getLogger(__name__)


def make_scheduler(objective: DiffusionObjective, name: str = "ddim") -> Any:
    """A fresh diffusers scheduler `name` on the objective's β schedule."""
    if name not in SCHEDULERS:
        raise ConfigError(f"scheduler {name!r} is unknown; use one of {', '.join(SCHEDULERS)}")
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(objective.scheduler.config)


@torch.no_grad()
def sample(
    model: nn.Module,
    cond: Conditions,
    objective: DiffusionObjective,
    io: DenoiserIO,
    *,
    steps: int = 20,
    scheduler: str = "ddim",
    seed: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """`cond.n` images from `model` (in its own space: pixels or latents), (n, C, H, W).

    Each chunk of `batch_size` images runs `steps` scheduler steps on the model's
    device in eval mode; `io` gives the images' shape (the task's `io`).
    """
    if int(steps) < 1:
        raise ConfigError(f"steps={steps}; sampling needs at least 1 step (20 is typical)")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size}; it must be a positive int")
    dev = model_device(model)
    g = torch.Generator().manual_seed(int(seed))  # CPU: the same noise on any device
    # all initial noise in one draw, then chunked: the images do not depend on batch_size
    noise = torch.randn((cond.n, io.channels, io.size, io.size), generator=g)  # (n, C, H, W)
    noise_g = torch.Generator(dev).manual_seed(int(seed) + 1)  # ancestral steps' noise
    out = []
    with eval_mode(model):
        for s in range(0, cond.n, int(batch_size)):
            b = min(int(batch_size), cond.n - s)
            ctx = None if cond.context is None else cond.context[s : s + b].to(dev)
            sched = make_scheduler(objective, scheduler)  # multistep solvers keep state
            sched.set_timesteps(int(steps), device=dev)
            x = noise[s : s + b].to(dev) * sched.init_noise_sigma
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t)
                pred = denoise(model, inp, t.expand(b).to(dev), ctx)  # (b, C or 2C, H, W)
                x = sched.step(eps_part(pred, io.channels), t, x, generator=noise_g).prev_sample
            out.append(x.float())
    return torch.cat(out) if out else torch.empty(0, io.channels, io.size, io.size)
