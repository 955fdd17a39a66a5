"""Micro-models of single blocks, what a latency table times for one key.

A family lists one builder per block kind, `(dims, BlockInputs) → (module,
inputs)`, and `block_model_hook` turns the list into its `Family.block_model`:
seeded weights and inputs (the caller's RNG untouched), eval mode, and a
`ConfigError` that names the kinds or the missing dim on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError

Built = tuple[nn.Module, tuple[Tensor, ...]]


class BlockInputs:
    """Deterministic example inputs of one block model: one generator seeded 0."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.g = torch.Generator().manual_seed(0)

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(self.batch, *shape, generator=self.g)

    def steps(self) -> Tensor:
        """Timesteps (B,) in [0, 1000), as float (what an on-device runtime feeds)."""
        return torch.randint(0, 1000, (self.batch,), generator=self.g).float()


Builder = Callable[[dict[str, Any], BlockInputs], Built]


def block_model_hook(family: str, builders: Mapping[str, Builder]) -> Callable[..., Built]:
    """`Family.block_model` from one builder per block kind."""

    def block_model(kind: str, dims: Mapping[str, Any], batch: int = 1) -> Built:
        build = builders.get(kind)
        if build is None:
            raise ConfigError(
                f"{family} has no block kind {kind!r}; its kinds are {sorted(builders)}"
            )
        with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
            torch.manual_seed(0)
            try:
                module, inputs = build(dict(dims), BlockInputs(batch))
            except KeyError as e:
                raise ConfigError(
                    f"{family} block {kind!r} needs dim {e.args[0]!r}; got dims {dict(dims)} "
                    "(give the dims of a BlockSpec of this family)"
                ) from None
        return module.eval(), inputs

    return block_model
