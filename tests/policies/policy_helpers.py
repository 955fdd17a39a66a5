"""Helpers of the policy tests: a tiny denoising task and fresh supernets (the synthetic
latency table is `latency_tables.testing.synthetic_table`)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import search_spaces  # noqa: F401
from nas import SPACES
from nas.tasks.base import Batch, DenoiserIO, Task, denoise


class TinyDenoising(Task):
    """ε-prediction on 32 fixed smooth random images (cosine schedule), seeded streams."""

    name = "tiny"

    def __init__(self, model: nn.Module, n: int = 32, seed: int = 0) -> None:
        self.io = DenoiserIO.of(model)
        g = torch.Generator().manual_seed(seed)
        io = self.io
        low = torch.randn(n, io.channels, 4, 4, generator=g)
        self.x0 = torch.tanh(F.interpolate(low, size=(io.size, io.size), mode="bilinear"))
        self.ctx = (
            torch.randn(n, io.context_len, io.context_dim, generator=g)
            if io.context_len is not None
            else None
        )

    def batches(
        self, batch_size: int, seed: int, device: str | torch.device = "cpu"
    ) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(seed)
        while True:
            idx = torch.randint(0, len(self.x0), (batch_size,), generator=g)
            batch = {"x0": self.x0[idx].to(device)}
            if self.ctx is not None:
                batch["context"] = self.ctx[idx].to(device)
            yield batch

    def loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> Tensor:
        x0 = batch["x0"]
        b = x0.shape[0]
        t = torch.randint(0, 1000, (b,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        abar = torch.cos(t.float() / 1000 * math.pi / 2).pow(2).view(b, 1, 1, 1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return F.mse_loss(denoise(model, xt, t, batch.get("context")), noise)

    def validate(self, model: nn.Module) -> dict[str, float]:
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return {"val_loss": float(self.loss(model, next(self.batches(16, 7)), g))}


def make_net(name: str = "test_mobile_unet", seed: int = 0):
    torch.manual_seed(seed)
    return SPACES.get(name).supernet()
