"""Fixtures of the training tests: the digits task per space (loading it takes ~1 s)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nas.supernet import Supernet
from nas.tasks.digits import DigitsDenoising


@pytest.fixture(scope="session")
def digits_for() -> Callable[[Supernet], DigitsDenoising]:
    """Digits task for a supernet's input shapes (cached per space: loading takes ~1 s)."""
    cache: dict[str, DigitsDenoising] = {}

    def get(net: Supernet) -> DigitsDenoising:
        name = net.space.name
        if name not in cache:
            cache[name] = DigitsDenoising.for_model(net, val_timesteps=4, val_fraction=0.05)
        return cache[name]

    return get
