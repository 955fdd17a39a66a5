"""The cost model: latency (from a table), params, MACs and bytes of many samples at once.

Vectorized over samples with numpy (`predict_index` takes the option-index
matrix of `SearchSpace.encode(kind="index")`), and differentiable for
one-shot search (`expected`): given independent per-label probabilities p_L,

    E[T] = Σ_blocks Σ_c P(c) Σ_s frac(c, s) Σ_o p_{q(c,s)}(o) · T(shape(c), kernel(o))

where c ranges over the block's dependency-label combos with P(c) = Π_L p_L(c_L),
s over its layers (frac = the layer's MAC share, see `latency_tables.keys`) and o
over the options of the layer's quant label. A soft channel count between two
options is the linear interpolation of their entries (`soft_choice`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from latency_tables.kernels import KERNELS
from latency_tables.keys import BlockKey
from latency_tables.structure import KERNEL_INDEX, SpaceStructure
from latency_tables.table import LatencyTable
from nas.errors import ConfigError, MissingLatencyEntryError

# one implementation for the cost model and the PaS masks (nas never imports latency_tables)
from nas.policies.pas import soft_probs as soft_choice  # noqa: F401  (re-exported)
from nas.space import SearchSpace
from nas.spec import ArchSpec

FP32 = KERNEL_INDEX["fp32"]


class CostModel:
    """Costs of a space's samples: ``latency_ms`` (needs a table), ``params``, ``macs``, ``bytes``.

    strict: a key of the space missing from the table raises `MissingLatencyEntryError`
    at construction, naming the keys and the command that measures them; with
    strict=False, latencies that need a missing key are NaN.
    """

    def __init__(
        self,
        space: SearchSpace,
        table: LatencyTable | None = None,
        strict: bool = True,
        structure: SpaceStructure | None = None,
    ) -> None:
        self.space = space
        self.structure = structure or SpaceStructure(space)
        self.table = table
        st = self.structure
        self._frac = []  # per block: (C, S) MAC share of each layer in its block
        self._lat = []  # per block: (C, K) latency of the combo's shape on each kernel
        for t in st.blocks:
            tot = t.macs.sum(1, keepdims=True)
            frac = np.divide(t.macs, tot, out=np.zeros_like(t.macs), where=tot > 0)
            # A block with no MACs (no conv/linear) is timed on its fp32 entry alone.
            if t.label.shape[1] == 0:
                frac = np.zeros((len(t.shapes), 1))
            self._frac.append(frac)
            self._lat.append(np.full((len(t.shapes), len(KERNELS)), np.nan))
        if table is not None:
            missing: list[str] = []
            needed = {k.id for k in st.block_keys()}
            for t, lat in zip(st.blocks, self._lat):
                for c, s in enumerate(t.shapes):
                    if s is None:
                        lat[c] = 0.0
                        continue
                    for k in range(len(KERNELS)):
                        key = BlockKey(s[0], s[1], KERNELS[k])
                        if key in table:
                            lat[c, k] = table.latency_ms(key)
                        elif key.id in needed:
                            missing.append(key.id)
            self.missing = sorted(set(missing))
            if self.missing and strict:
                raise MissingLatencyEntryError(table.missing_message(self.missing, space.name))
        self._kernel_t = torch.as_tensor(st.kernel)

    # -- vectorized -------------------------------------------------------------------------
    def predict_index(
        self, idx: np.ndarray, what: Sequence[str] = ("latency_ms",)
    ) -> dict[str, np.ndarray]:
        """Costs of samples given as an option-index matrix (N, labels)."""
        st = self.structure
        idx = np.asarray(idx)
        n = len(idx)
        rows = np.arange(n)
        out = {w: np.zeros(n) for w in what}
        if "latency_ms" in out and self.table is None:
            raise ConfigError("this CostModel has no latency table; pass one to predict latency")
        combos: dict[tuple[int, ...], np.ndarray] = {}  # blocks often share dependency labels
        for t, frac, lat in zip(st.blocks, self._frac, self._lat):
            c = combos.get(t.deps)
            if c is None:
                c = combos[t.deps] = t.combo_index(idx)  # (N,)
            for s in range(t.label.shape[1]):
                lab = t.label[c, s]  # (N,) quant label of this layer slot, -1 if none
                has = lab >= 0
                opt = np.where(has, idx[rows, np.maximum(lab, 0)], 0)
                if "latency_ms" in out:
                    k = np.where(has, st.kernel[np.maximum(lab, 0), opt], FP32)
                    f = frac[c, s]
                    # padded slots (f = 0) must not turn a missing entry's NaN into a cost
                    out["latency_ms"] += np.where(f > 0, f * lat[c, k], 0.0)
                if "params" in out:
                    out["params"] += t.params[c, s]
                if "macs" in out:
                    out["macs"] += t.macs[c, s]
                if "bytes" in out:
                    bits = np.where(has, st.w_bits[np.maximum(lab, 0), opt], 32.0)
                    out["bytes"] += t.params[c, s] * bits / 8.0
            if "latency_ms" in out and t.label.shape[1] == 0:
                out["latency_ms"] += lat[c, FP32]
        return out

    def predict(self, archs: Sequence[Mapping[str, Any] | ArchSpec]) -> np.ndarray:
        """Predicted latency (ms) of samples or specs."""
        return self.costs(archs, ("latency_ms",))["latency_ms"]

    def costs(
        self,
        archs: Sequence[Mapping[str, Any] | ArchSpec],
        what: Sequence[str] = ("latency_ms", "params", "macs", "bytes"),
    ) -> dict[str, np.ndarray]:
        samples = [a.sample_dict if isinstance(a, ArchSpec) else a for a in archs]
        return self.predict_index(self.structure.encode(samples), what)

    # -- differentiable ---------------------------------------------------------------------
    def expected(
        self, probs: Mapping[str, torch.Tensor], default: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """E[latency] (ms) under independent per-label probabilities, with gradients.

        probs: label → probability vector over its options (sums to 1). Labels not in
        `probs` take their value in `default` (the space's default sample if None).
        """
        if self.table is None:
            raise ConfigError("expected latency needs a latency table")
        st = self.structure
        base = dict(self.space.default() if default is None else default)
        dtype = torch.float64
        dev = next((p.device for p in probs.values()), torch.device("cpu"))
        vecs: list[torch.Tensor] = []
        for lab in st.labels:
            opts = self.space[lab].options
            if lab in probs:
                p = probs[lab].to(dtype)
                if p.shape != (len(opts),):
                    raise ConfigError(
                        f"probs[{lab!r}] has shape {tuple(p.shape)}; expected ({len(opts)},)"
                    )
            else:
                p = torch.zeros(len(opts), dtype=dtype, device=dev)
                p[opts.index(base[lab])] = 1.0
            vecs.append(p)
        # q[l]: expected kernel distribution of quant label l (K,); fp32 for "no label".
        eye = torch.eye(len(KERNELS), dtype=dtype, device=dev)
        q = []
        for i, lab in enumerate(st.labels):
            k = self._kernel_t[i, : len(vecs[i])].to(dev)
            q.append(vecs[i] @ eye[k])
        q.append(eye[FP32])  # index -1 → fp32
        qmat = torch.stack(q)  # (L + 1, K)
        total = torch.zeros((), dtype=dtype, device=dev)
        for t, frac, lat in zip(st.blocks, self._frac, self._lat):
            pc = torch.ones((), dtype=dtype, device=dev)
            for d in t.deps:  # P(c) = outer product of the dependency labels' probabilities
                pc = torch.outer(pc.reshape(-1), vecs[d]).reshape(-1)
            pc = pc.reshape(-1)
            tck = torch.as_tensor(np.nan_to_num(lat, nan=0.0), dtype=dtype, device=dev)  # (C, K)
            if t.label.shape[1] == 0:
                total = total + (pc * tck[:, FP32]).sum()
                continue
            qcs = qmat[torch.as_tensor(t.label, device=dev)]  # (C, S, K)
            per_slot = (qcs * tck[:, None, :]).sum(-1)  # (C, S)
            f = torch.as_tensor(frac, dtype=dtype, device=dev)
            total = total + (pc * (f * per_slot).sum(1)).sum()
        return total
