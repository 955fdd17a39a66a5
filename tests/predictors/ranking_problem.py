"""A synthetic ranking problem over a `SearchSpace.from_choices` space.

Four stages, each with a width, a depth, an op and a quant scheme. The true label is a
loss (lower is better), a known nonlinear function of the architecture plus noise:

    capacity_j = log2(width_j) · depth_j^0.6 · op_gain[op_j]
    loss = Σ_j a_j · exp(−capacity_j / 4) + Σ_j q_pen[q_j] · (1 + 16 / width_j)
           + 0.3 · [op_0 = skip ∧ op_1 = skip] + noise

Weak labels (a possibly larger pool): a "supernet score" (the truth, biased towards
full-precision quant and with heavy noise), the parameter count and a latency proxy.
"""

from __future__ import annotations

import numpy as np

from nas.space import SearchSpace

WIDTHS = [16, 32, 48, 64]
DEPTHS = [1, 2, 3]
OPS = ["skip", "dw3", "conv3", "conv5"]
QUANTS = ["w4a8", "w8a8", "fp16"]
OP_GAIN = np.array([0.35, 0.8, 1.0, 1.15])
OP_COST = np.array([0.0, 0.15, 1.0, 2.6])
Q_PEN = np.array([0.12, 0.03, 0.0])
Q_LAT = np.array([0.5, 0.7, 1.0])
STAGE_A = np.array([1.0, 1.4, 1.8, 1.2])
N_STAGES = 4


def space() -> SearchSpace:
    choices = {}
    for j in range(N_STAGES):
        choices[f"stage.{j}.width"] = WIDTHS
        choices[f"stage.{j}.depth"] = DEPTHS
        choices[f"stage.{j}.op"] = OPS
        choices[f"stage.{j}.quant"] = QUANTS
    return SearchSpace.from_choices(choices, name="synthetic_ranking")


def _parts(sp: SearchSpace, samples):
    idx = sp.encode(samples, kind="index").reshape(len(samples), N_STAGES, 4)  # (N, stage, field)
    w = np.asarray(WIDTHS, dtype=float)[idx[..., 0]]  # (N, S)
    d = np.asarray(DEPTHS, dtype=float)[idx[..., 1]]
    op = idx[..., 2]
    q = idx[..., 3]
    return w, d, op, q


def true_loss(sp: SearchSpace, samples, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    w, d, op, q = _parts(sp, samples)
    cap = np.log2(w) * d**0.6 * OP_GAIN[op]  # (N, S)
    loss = (STAGE_A * np.exp(-cap / 4.0)).sum(1)
    loss += (Q_PEN[q] * (1.0 + 16.0 / w)).sum(1)
    loss += 0.3 * ((op[:, 0] == 0) & (op[:, 1] == 0))
    return loss + noise * np.random.default_rng(seed).standard_normal(len(samples))


def weak_labels(sp: SearchSpace, samples, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """(N, 3): supernet score (a biased, noisy loss), params, latency proxy."""
    rng = np.random.default_rng(seed + 1000)
    w, d, op, q = _parts(sp, samples)
    clean = true_loss(sp, samples, noise=0.0)
    # the supernet under-rates quantized subnets it rarely trained: bias on q < fp16
    supernet = clean - 0.5 * (Q_PEN[q]).sum(1) + noise * rng.standard_normal(len(samples))
    params = (w**2 * d * (1 + OP_COST[op])).sum(1)
    latency = (w**2 * d * (0.2 + OP_COST[op]) * Q_LAT[q]).sum(1)
    return np.stack([supernet, params, latency], 1)
