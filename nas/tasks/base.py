"""The `Task` contract: data + loss + deterministic validation metric.

A task scores an architecture. It sees a denoiser only through `denoise(model,
x, t, context)`, so it runs the U-Net family (inputs ``sample, timestep,
encoder_hidden_states``), the DiT family (``hidden_states, encoder_hidden_states,
timestep``), a supernet with an active sub-network and its extracted standalone
model alike. Shapes come from `DenoiserIO.of(model)`, i.e. the model's own
`example_inputs`, so a task never hard-codes a space's resolution.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError

#: A training or validation batch: ``x0`` (B, C, H, W) clean images or latents in [-1, 1]
#: (or latent scale), ``context`` (B, L, D) the conditioning sequence (absent when the
#: model has no cross-attention), ``label`` (B,) optional integer class.
Batch = dict[str, Tensor]


@dataclass(frozen=True)
class DenoiserIO:
    """What a denoiser takes: image channels and size, context length and width."""

    channels: int
    size: int
    context_len: int | None
    context_dim: int | None

    @classmethod
    def of(cls, model: nn.Module) -> DenoiserIO:
        """Read the shapes from the model's `example_inputs` (supernets and families have it)."""
        ex = getattr(model, "example_inputs", None)
        if ex is None:
            raise ConfigError(
                f"{type(model).__name__} has no example_inputs(); build the task from a "
                "supernet of a registered space (nas.get_space(name).supernet())"
            )
        inputs = ex(batch=1)
        img = inputs.get("sample", inputs.get("hidden_states"))
        ctx = inputs.get("encoder_hidden_states")
        return cls(
            channels=int(img.shape[1]),
            size=int(img.shape[-1]),
            context_len=None if ctx is None else int(ctx.shape[1]),
            context_dim=None if ctx is None else int(ctx.shape[2]),
        )


def _image_arg(model: nn.Module) -> str:
    params = list(inspect.signature(model.forward).parameters)
    if "sample" in params:
        return "sample"
    if "hidden_states" in params:
        return "hidden_states"
    raise ConfigError(
        f"{type(model).__name__}.forward takes neither `sample` nor `hidden_states`; "
        "a denoiser must follow the diffusers UNet2DConditionModel or Transformer2D signature"
    )


def denoise(model: nn.Module, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
    """The model's prediction for noisy `x` (B, C, H, W) at timesteps `t` (B,)."""
    kwargs: dict[str, Any] = {_image_arg(model): x, "timestep": t, "return_dict": False}
    if context is not None:
        kwargs["encoder_hidden_states"] = context
    return model(**kwargs)[0]


class Task(ABC):
    """Data, a training loss and a deterministic validation metric for denoisers."""

    name: str = "task"

    @abstractmethod
    def batches(
        self, batch_size: int, seed: int, device: str | torch.device = "cpu"
    ) -> Iterator[Batch]:
        """An endless, seeded stream of training batches (same seed → same stream)."""

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> Tensor:
        """The scalar training loss of `model` on `batch` (noise drawn from `generator`)."""

    @abstractmethod
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Deterministic validation metrics; ``val_loss`` (lower is better) is always present."""
