"""Which labels shape which block: the structure of a space, for keys and vectorized costs.

Any registered space is a black box `sample → ArchSpec`. To enumerate every
block key the space can produce (without enumerating its 1e200 samples) and
to predict costs for 1e5 samples at once, we find, for every block path, the
structural labels its shape depends on, by perturbing one label at a time
from the largest and the smallest sample. A block's shape is then a table
over the product of its few dependency labels' options ("combos"), and its
layers' quant schemes come from their own labels.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from latency_tables.kernels import KERNELS, kernel_of
from latency_tables.keys import BlockKey, shape_id
from nas.quant.scheme import QuantScheme
from nas.space import SearchSpace
from nas.spec import ArchSpec, BlockSpec, Value

log = logging.getLogger(__name__)

KERNEL_INDEX = {k: i for i, k in enumerate(KERNELS)}


@dataclass(frozen=True)
class BlockTable:
    """One block path: its shape and layers for every combo of its dependency labels.

    deps: label indices; radix: their option counts; shapes[c]: (kind, dims) or None
    where combo c removes the block; per (combo, layer slot): `label` (index of the
    layer's quant label, -1 for none), `macs`, `params` and `act` (elements of the
    layer's input plus output activations, (in + out) · positions; 0 for absent slots).
    """

    path: str
    deps: tuple[int, ...]
    radix: tuple[int, ...]
    shapes: tuple[tuple[str, tuple[tuple[str, Value], ...]] | None, ...]
    label: np.ndarray  # (C, S) int
    macs: np.ndarray  # (C, S) float
    params: np.ndarray  # (C, S) float
    act: np.ndarray  # (C, S) float

    def combo_index(self, idx: np.ndarray) -> np.ndarray:
        """Combo of each sample from an option-index matrix (N, labels) → (N,)."""
        if not self.deps:
            return np.zeros(len(idx), dtype=np.int64)
        return np.ravel_multi_index(tuple(idx[:, d] for d in self.deps), self.radix)


def _signature(block: BlockSpec) -> tuple:
    """What a block's costs depend on: shape, and which labels quantize its layers (a depth
    label can move a block onto another supernet layer's quant label without changing it)."""
    return (block.kind, block.dims, tuple((layer.label, layer.positions) for layer in block.layers))


class SpaceStructure:
    """The blocks of a space, their dependency labels and per-combo layer tables."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.labels = space.labels
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        base_max = space.canonical(space.max())
        base_min = space.canonical(space.min())
        self._cache: dict[frozenset, dict[str, BlockSpec]] = {}
        self._base = base_max
        probe = self._blocks(base_max)
        quant = {layer.label for b in probe.values() for layer in b.layers if layer.label} | {
            lab for lab in self.labels if lab.endswith(".quant")
        }
        self.quant_labels = [lab for lab in self.labels if lab in quant]
        self.structural = [lab for lab in self.labels if lab not in quant]
        deps = self._dependencies([base_max, base_min])
        self.blocks = [self._table(path, deps[path]) for path in sorted(deps)]
        # Per label and option: kernel index and weight bits (quant labels only).
        width = max(len(space[lab]) for lab in self.labels)
        self.kernel = np.zeros((len(self.labels), width), dtype=np.int64)
        self.w_bits = np.full((len(self.labels), width), 32.0)
        for lab in self.quant_labels:
            i = self._index[lab]
            for j, opt in enumerate(space[lab].options):
                scheme = QuantScheme.parse(str(opt))
                self.kernel[i, j] = KERNEL_INDEX[kernel_of(scheme)]
                self.w_bits[i, j] = float(scheme.w_bits)
        self._cache.clear()

    # -- analysis ---------------------------------------------------------------------------
    def _blocks(
        self, sample: Mapping[str, Any], changed: frozenset | None = None
    ) -> dict[str, BlockSpec]:
        key = changed if changed is not None else frozenset()
        if key not in self._cache:
            spec: ArchSpec = self.space.freeze(sample)
            self._cache[key] = {b.path: b for b in spec.blocks}
        return self._cache[key]

    def _dependencies(self, bases: list[dict[str, Any]]) -> dict[str, set[str]]:
        deps: dict[str, set[str]] = {}
        for base in bases:
            ref = {b.path: _signature(b) for b in self.space.freeze(base).blocks}
            for p in ref:
                deps.setdefault(p, set())
            for lab in self.structural:
                for opt in self.space[lab].options:
                    if opt == base[lab]:
                        continue
                    other = {
                        b.path: _signature(b)
                        for b in self.space.freeze(dict(base, **{lab: opt})).blocks
                    }
                    for p in set(ref) | set(other):
                        deps.setdefault(p, set())
                        if ref.get(p) != other.get(p):
                            deps[p].add(lab)
        return deps

    def _table(self, path: str, dep_labels: set[str]) -> BlockTable:
        deps = tuple(sorted(self._index[lab] for lab in dep_labels))
        options = [self.space[self.labels[d]].options for d in deps]
        shapes: list[tuple[str, tuple[tuple[str, Value], ...]] | None] = []
        rows: list[list[tuple[int, float, float, float]]] = []
        for combo in itertools.product(*options):
            assign = {self.labels[d]: v for d, v in zip(deps, combo)}
            changed = frozenset((k, v) for k, v in assign.items() if self._base[k] != v)
            block = self._blocks(dict(self._base, **assign), changed).get(path)
            if block is None:
                shapes.append(None)
                rows.append([])
                continue
            shapes.append((block.kind, block.dims))
            rows.append(
                [
                    (
                        self._index.get(layer.label, -1),
                        float(layer.macs),
                        float(layer.params),
                        float((layer.in_features + layer.out_features) * layer.positions),
                    )
                    for layer in block.layers
                ]
            )
        slots = max((len(r) for r in rows), default=0)
        label = np.full((len(rows), slots), -1, dtype=np.int64)
        macs = np.zeros((len(rows), slots))
        params = np.zeros((len(rows), slots))
        act = np.zeros((len(rows), slots))
        for c, r in enumerate(rows):
            for s, (lab, m, p, a) in enumerate(r):
                label[c, s], macs[c, s], params[c, s], act[c, s] = lab, m, p, a
        return BlockTable(
            path, deps, tuple(len(o) for o in options), tuple(shapes), label, macs, params, act
        )

    # -- results ----------------------------------------------------------------------------
    @property
    def has_layers(self) -> bool:
        """Whether some block of the space has a conv/linear layer. Params, MACs and bytes are
        sums over layers, so without one they are unknown (a space declared with
        `SearchSpace.from_choices` freezes to specs without any block)."""
        return any(t.label.shape[1] > 0 for t in self.blocks)

    @property
    def neutral_labels(self) -> list[str]:
        """Labels that shape no block and quantize no layer, in space order: no cost varies
        with them (a training hyper-parameter, or a choice the space's builder ignores).

        Found by the same one-label perturbations of the largest and the smallest sample as
        the blocks' dependencies, so a label whose effect both of them mask counts as neutral.
        """
        used: set[int] = set()
        for t in self.blocks:
            used.update(t.deps)
            used.update(int(i) for i in np.unique(t.label) if i >= 0)
        return [lab for i, lab in enumerate(self.labels) if i not in used]

    def shapes(self) -> dict[str, tuple[str, tuple[tuple[str, Value], ...]]]:
        """shape id → (kind, dims) of every block shape the space can produce."""
        out = {}
        for t in self.blocks:
            for s in t.shapes:
                if s is not None:
                    out[shape_id(*s)] = s
        return out

    def block_keys(self) -> list[BlockKey]:
        """Every key (shape × kernel class reachable by its layers' quant options)."""
        keys: set[BlockKey] = set()
        for t in self.blocks:
            for c, s in enumerate(t.shapes):
                if s is None:
                    continue
                kernels = set()
                for lab in t.label[c]:
                    if lab < 0:
                        kernels.add(KERNEL_INDEX["fp32"])
                    else:
                        kernels.update(
                            int(k) for k in self.kernel[lab, : len(self.space[self.labels[lab]])]
                        )
                if t.macs[c].sum() == 0 and not kernels:
                    kernels.add(KERNEL_INDEX["fp32"])
                keys.update(BlockKey(s[0], s[1], KERNELS[k]) for k in kernels)
        return sorted(keys)

    def encode(self, samples: list[Mapping[str, Any]]) -> np.ndarray:
        """Option-index matrix of samples, the input of vectorized costs.

        No need to canonicalize: each block's table was built through `freeze`, which does.
        """
        return self.space.encode(samples, kind="index")
