"""Helpers shared by the trainers: per-step seeds, RNG isolation, frozen parameters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for step `step` of a run seeded `seed` (independent streams per step)."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU torch Generator that draws step `step`'s noise.

    On the CPU whatever the model's device (the tasks' `noisy` draws on the
    generator's device and moves the draws), so a run's noise is the same on any
    device and a checkpoint resumes on another one.
    """
    gen = torch.Generator()
    gen.manual_seed(step_seed(seed, step))
    return gen


#: Tags the sub-network stream of a step apart from its noise stream (`step_generator`).
_SUBNET_STREAM = 1


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The numpy Generator that draws step `step`'s random sub-networks.

    A function of (seed, step) alone, like the noise: every data-parallel rank draws
    the same sub-networks in a step without sharing a generator's state, and a resumed
    or rolled-back run draws them again whatever it did before.
    """
    return np.random.default_rng([seed, step, _SUBNET_STREAM])


@contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Turn off `requires_grad` of `params` inside the block (restored after)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Restore torch's global RNG after the block (validation must not shift training)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def device_of(model: nn.Module) -> torch.device:
    """The device of `model`'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
