"""Helpers of the task tests (a uniquely named module: test folders have no __init__.py)."""

from __future__ import annotations

import torch

import nas
import search_spaces  # noqa: F401  (registers the spaces)

# A small validation set keeps every validate() call well under a second.
SMALL = {"val_fraction": 0.05, "val_timesteps": 4}


def supernet(name: str, seed: int = 0) -> nas.Supernet:
    """A freshly initialised supernet of a registered space (init seeded)."""
    torch.manual_seed(seed)
    return nas.get_space(name).supernet()
