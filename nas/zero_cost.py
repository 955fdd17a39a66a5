"""A data-dependent zero-cost proxy of a sub-network on the supernet: jacov.

Mellor et al. 2021, "Neural Architecture Search without Training" (arXiv:2006.04647v1,
eq. 2; "jacov" in Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS"): for
a minibatch x_1..x_B, let J_b = ∂(Σ f(x_b))/∂x_b, flattened, Σ_J the correlation matrix
of the J_b (B × B) and σ_1..σ_B its eigenvalues; then

    s = −Σ_i [ log(σ_i + k) + (σ_i + k)⁻¹ ],   k = 1e−5,

higher when the network's local linear maps of different inputs are less correlated —
it tells its inputs apart. −s ≥ B, with equality for uncorrelated Jacobians.

For a denoiser f is the ε prediction at the noisy input x_t (the task's own noise and
timesteps, seeded); one forward and one backward pass of one minibatch per architecture,
with the sub-network activated on the supernet (its weights inherited, trained or not).
The samples of a minibatch are independent in eval mode (GroupNorm, no batch statistics),
so one backward of Σ_b Σ f(x_b) gives every J_b at once.

`JacovProxy(supernet, task)(samples)` returns log(−s) per sample (N,): lower = predicted
better, the orientation of a weak label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nas.errors import ConfigError
from nas.supernet import Supernet
from nas.tasks.base import Task, denoise
from nas.tasks.util import eval_mode

log = logging.getLogger(__name__)

K = 1e-5  # Mellor et al.'s k: keeps the log and the inverse finite at zero eigenvalues


def jacov(jacobians: torch.Tensor) -> float:
    """The score s of Jacobians (B, D) (see the module doc; higher = better)."""
    j = jacobians.double()
    j = j - j.mean(1, keepdim=True)
    norm = j.norm(dim=1, keepdim=True).clamp_min(1e-30)
    corr = (j / norm) @ (j / norm).T  # (B, B) correlation matrix
    sigma = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(sigma + K) + 1.0 / (sigma + K)).sum())


class JacovProxy:
    """log(−jacov) of sub-networks of `supernet` on one seeded minibatch of `task`."""

    def __init__(self, supernet: Supernet, task: Task, batch_size: int = 32, seed: int = 0):
        objective = getattr(task, "objective", None)
        if objective is None or not hasattr(objective, "noisy"):
            raise ConfigError(
                f"the jacov proxy needs a diffusion task (with .objective.noisy); "
                f"{type(task).__name__} has none"
            )
        if batch_size < 2:
            raise ConfigError(f"jacov batch_size={batch_size}; a correlation needs ≥ 2 inputs")
        self.supernet = supernet
        dev = next(supernet.parameters()).device
        batch = next(task.batches(batch_size, seed, device=dev))
        g = torch.Generator().manual_seed(seed)  # CPU: the same draws on any device
        x_t, t, _ = objective.noisy(batch["x0"], g)
        self.x_t, self.t, self.context = x_t, t, batch.get("context")

    def score(self, sample: Mapping[str, Any]) -> float:
        """log(−s) of one sample (lower = better)."""
        x = self.x_t.detach().clone().requires_grad_(True)
        with self.supernet.activate(sample), eval_mode(self.supernet):
            out = denoise(self.supernet, x, self.t, self.context)
            (grad,) = torch.autograd.grad(out.sum(), x)
        s = jacov(grad.reshape(len(grad), -1))
        return float(np.log(-s))

    def __call__(self, samples: Sequence[Mapping[str, Any]], progress: bool = False) -> np.ndarray:
        it = tqdm(samples, desc="jacov", disable=not progress)
        return np.array([self.score(s) for s in it])
