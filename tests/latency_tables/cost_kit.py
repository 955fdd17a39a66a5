"""Helpers shared by the cost-model tests."""

from __future__ import annotations


def one_hot_probs(space, sample) -> dict:
    """Per-label one-hot probabilities of `sample` (what `CostModel.expected` takes)."""
    import torch

    return {
        lab: torch.nn.functional.one_hot(
            torch.tensor(space[lab].index(sample[lab])), len(space[lab])
        ).double()
        for lab in space.labels
    }
