"""Shared by the family tests: what each conv / linear of a model really runs over."""

import torch
from torch import nn


def positions_by_hooks(model: torch.nn.Module, inputs: dict) -> dict[str, int]:
    """Output positions each conv / linear runs over (pixels or tokens) in one forward pass."""
    seen: dict[str, int] = {}

    def hook(path: str):
        def f(mod, args, out):
            seen[path] = out.numel() // out.shape[1 if isinstance(mod, nn.Conv2d) else -1]

        return f

    handles = [
        m.register_forward_hook(hook(p))
        for p, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    return seen
