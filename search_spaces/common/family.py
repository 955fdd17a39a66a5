"""Plumbing every shipped family needs alike.

- `init_defaults` / `effective_config`: a diffusers teacher's config as its class
  would see it (keyword defaults filled in, ``_``-prefixed bookkeeping keys such as
  ``_class_name`` dropped), what `check_teacher_config` of each family compares.
- `denoiser_inputs`: seeded example inputs of a denoiser (both families' `example_inputs`);
  `inputs_on`: a supernet's example inputs on the device of its parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


def init_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of ``cls.__init__`` (a diffusers model class)."""
    return {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def effective_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` over the defaults of `cls`, without its ``_``-prefixed bookkeeping keys."""
    return {**init_defaults(cls), **{k: v for k, v in config.items() if not k.startswith("_")}}


def inputs_on(module: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`inputs` moved to the device of `module`'s parameters."""
    device = next(module.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def denoiser_inputs(
    batch: int,
    seed: int,
    image_key: str,
    image: tuple[int, int, int],
    context: tuple[int, int] | None,
) -> dict[str, Tensor]:
    """Seeded keyword inputs of a denoiser, drawn in this order from one generator:
    noisy images (B, *image) under `image_key`, integer timesteps in [0, 1000) and, when
    `context` (L, D) is given, ``encoder_hidden_states`` (B, L, D)."""
    g = torch.Generator().manual_seed(seed)
    out = {
        image_key: torch.randn(batch, *image, generator=g),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
    }
    if context is not None:
        out["encoder_hidden_states"] = torch.randn(batch, *context, generator=g)
    return out
