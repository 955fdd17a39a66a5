"""Small helpers the tasks share: eval mode that restores itself, a model's device, outputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode inside the block; restore every submodule's own flag after.

    `model.train(was_training)` would set all submodules alike; a caller may have
    mixed modes (e.g. a frozen part in eval), so each module's flag is restored.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


def model_device(model: Any, default: str | torch.device = "cpu") -> torch.device:
    """The device of `model`'s first parameter (or `default` for parameter-less callables)."""
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device
    return torch.device(default)


def first_tensor(out: Any) -> Tensor | None:
    """The hidden states of a module output: itself, the first of a tuple, or ``.sample``.

    diffusers' down blocks return ``(hidden_states, skips)``; output dataclasses carry
    ``sample``. Anything else gives None (the caller skips it).
    """
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    sample = getattr(out, "sample", None)
    return sample if isinstance(sample, Tensor) else None


def eps_part(pred: Tensor, channels: int) -> Tensor:
    """The ε prediction of an output (B, C or 2C, H, W): a learned-σ head (PixArt's
    ``out_channels = 2·in``) puts ε in its first C channels and the variance after."""
    return pred[:, :channels] if pred.shape[1] == 2 * channels else pred
