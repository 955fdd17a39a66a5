"""Residual features: what a block-level table cannot see, as sums that scale with tensor sizes.

A table times every block alone (kernel- and block-level prediction as in nn-Meter, Zhang
et al., MobiSys 2021: the model's latency is the sum of its kernels'). Inside the whole
model a block runs in another context, and the end-to-end residual is modelled as

    measured ≈ a · T_table + Σ_f w_f · F_f + c,     F_f = Σ_blocks Σ_layers φ_f(layer, kernel)   (1)

fitted on end-to-end runs (`latency_tables.calibration`). Each φ_f depends on one layer's
shape and the kernel its quant option runs (or, for per-block features, on the block
being present), so F_f is a sum over the same (block, combo, layer slot, option) cells as
the table sum: `CostModel` folds eq. (1) into its flat cost table, vectorized over samples
and differentiable in per-label probabilities alike.

Features (what they stand for, measured on onnxruntime / x86; see the README):

- ``weight_mb``: weights at the precision the runtime runs them, MB. A block timed alone
  finds its weights in cache on every timed run; inside the whole model the other blocks'
  weights have evicted them, so each inference reloads them (traffic ∝ bytes).
- ``act_mb``: activations the layers read and write, MB of float32. Data movement no
  block key owns (the skip concatenations of the up blocks, which the table's ResNet
  entries receive ready-made; skip tensors held across the U-Net) scales with it.
- ``layers``: one per conv/linear layer: the per-kernel cost a whole model pays that a
  block timed alone (the same few kernels over and over, their code and data hot) does
  not: each layer's kernel, with its quantize / dequantize nodes, runs cold among a
  thousand others. A count of kernels, which deep narrow architectures have many of.
- ``blocks``: one per present block: the same per block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from latency_tables.kernels import KERNELS
from latency_tables.structure import BlockTable
from nas.errors import ConfigError

#: bytes per weight of each kernel class as a runtime runs it
WEIGHT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "w8": 1.0, "w4a8": 0.5, "w4": 0.5}


@dataclass(frozen=True)
class CellInputs:
    """One block path's cells: (C combos, S' slots, O options of the slot's label).

    kernel: kernel index (into `KERNELS`) the runtime runs for each cell, after the table's
    kernel aliases; present: (C,) whether the combo has the block at all; params / act:
    (C, S') weights and activation elements of each layer slot (0 for padded slots).
    """

    kernel: np.ndarray
    present: np.ndarray
    params: np.ndarray
    act: np.ndarray


Feature = Callable[[CellInputs], np.ndarray]


def _weight_mb(x: CellInputs) -> np.ndarray:
    per_kernel = np.array([WEIGHT_BYTES[k] for k in KERNELS])
    return x.params[..., None] * per_kernel[x.kernel] / 1e6


def _act_mb(x: CellInputs) -> np.ndarray:
    return np.broadcast_to(x.act[..., None] * 4.0 / 1e6, x.kernel.shape).copy()


def _blocks(x: CellInputs) -> np.ndarray:
    out = np.zeros(x.kernel.shape)
    out[:, 0, :] = x.present[:, None]  # once per present block: on its first slot, any option
    return out


def _layers(x: CellInputs) -> np.ndarray:
    return np.broadcast_to((x.params > 0)[..., None], x.kernel.shape).astype(float)


FEATURES: dict[str, Feature] = {
    "weight_mb": _weight_mb,
    "act_mb": _act_mb,
    "blocks": _blocks,
    "layers": _layers,
}
UNITS = {
    "weight_mb": "ms per MB",
    "act_mb": "ms per MB",
    "blocks": "ms per block",
    "layers": "ms per conv/linear layer",
}
#: what `nas latency validate` fits by default (see the README for the measured choice)
DEFAULT_FEATURES = ("weight_mb", "act_mb", "layers")
#: whether it holds the intercept (a per-inference overhead) at ≥ 0 by default
NONNEG_INTERCEPT = False


def check_features(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown residual feature(s) {unknown}; choose from {sorted(FEATURES)}")
    return tuple(names)


def cell_inputs(
    t: BlockTable, kernel: np.ndarray, kernel_map: Mapping[str, str] | None = None
) -> CellInputs:
    """`CellInputs` of block table `t`, whose cells run kernel classes `kernel` (C, S', O);
    `kernel_map` (a table's meta) maps each class to the one the runtime really runs."""
    if kernel_map:
        alias = np.array([KERNELS.index(kernel_map.get(k, k)) for k in KERNELS])
        kernel = alias[kernel]
    n_c, n_s = kernel.shape[:2]
    present = np.array([s is not None for s in t.shapes])

    def pad(a: np.ndarray) -> np.ndarray:  # a block without layers has one empty slot
        return a if a.shape[1] == n_s else np.zeros((n_c, n_s))

    return CellInputs(kernel, present, pad(t.params), pad(t.act))


def cell_features(x: CellInputs, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Feature name → (C, S', O) values of one block's cells."""
    return {n: FEATURES[n](x) for n in names}
