"""Class-conditional denoising of scikit-learn's handwritten digits (no download).

The objective is DDPM's L_simple (Ho et al. 2020, eq. 14; `nas.tasks.diffusion`).
`sklearn.datasets.load_digits` ships 1797 8×8 grey images with values 0…16 (the
UCI optical-recognition digits). They are scaled to [-1, 1], upsampled bilinearly
to the model's size and repeated to its channel count. The class (0…9) conditions
the model through cross-attention, as a text prompt would: each class owns a fixed,
seeded, unit-variance sequence of ``context_len`` tokens of width ``context_dim``
(a stand-in for a frozen text encoder's output; never learned, so an exported
model needs no extra module). Models without cross-attention get no context.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.quality.base import Conditions
from nas.tasks.base import DenoiserIO
from nas.tasks.denoising import DenoisingTask, context_table

log = logging.getLogger(__name__)

NUM_CLASSES = 10
DIGITS_MAX = 16.0  # load_digits' pixel values are integers 0…16


def load_digits_tensor() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as ``(images (1797, 8, 8) float32 in [-1, 1], labels (1797,))``."""
    from sklearn.datasets import load_digits  # lazy: only this task needs scikit-learn

    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32) / DIGITS_MAX * 2.0 - 1.0
    return images, torch.as_tensor(d.target, dtype=torch.long)


def digits_images(io: DenoiserIO, images: Tensor) -> Tensor:
    """(N, 8, 8) in [-1, 1] → (N, C, size, size): bilinear resize, channels repeated."""
    x = images[:, None]  # (N, 1, 8, 8)
    if io.size != x.shape[-1]:
        # antialias only when shrinking (it is a no-op for upsampling)
        x = F.interpolate(
            x,
            size=(io.size, io.size),
            mode="bilinear",
            align_corners=False,
            antialias=io.size < x.shape[-1],
        )
    return x.clamp(-1.0, 1.0).repeat(1, io.channels, 1, 1)  # (N, C, S, S)


class DigitsDenoising(DenoisingTask):
    """DDPM ε-prediction on the digits, class-conditional through a fixed context table.

    ``class_contexts`` (10, L, D) is the table (None without cross-attention); a batch
    is ``{"x0": (B, C, S, S), "context": (B, L, D), "label": (B,)}``.
    """

    name = "digits"

    def __init__(
        self,
        io: DenoiserIO,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        val_timesteps: int = 8,
        schedule: str = "linear",
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> None:
        images, labels = load_digits_tensor()
        x0 = digits_images(io, images)
        table = context_table(NUM_CLASSES, io, seed) if io.context_len is not None else None
        super().__init__(
            io,
            x0,
            contexts=table,
            context_index=labels,
            labels=labels,
            val_fraction=val_fraction,
            seed=seed,
            val_timesteps=val_timesteps,
            schedule=schedule,
            device=device,
            **kwargs,
        )
        self.class_contexts: Tensor | None = self._data.get("contexts")  # (10, L, D)
        log.debug(
            "digits: %d train / %d val images at %d×%d×%d",
            self.num_train,
            self.num_val,
            io.channels,
            io.size,
            io.size,
        )

    def conditions(self, n: int) -> Conditions:
        """`n` images asked for the classes 0, 1, …, 9, 0, 1, … (a balanced set)."""
        label = torch.arange(int(n), device=self.device) % NUM_CLASSES  # (n,)
        ctx = None if self.class_contexts is None else self.class_contexts[label]  # (n, L, D)
        return Conditions(n=int(n), context=ctx, label=label)
