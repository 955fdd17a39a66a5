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

from latency_tables.calibration import Calibration
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
#: What `CostModel.costs` predicts (objective and budget names a config may use).
COSTS = ("table_ms", "latency_ms", "params", "macs", "bytes")


class CostModel:
    """Costs of a space's samples: ``latency_ms`` (needs a table), ``params``, ``macs``, ``bytes``.

    strict: a key of the space missing from the table raises `MissingLatencyEntryError`
    at construction, naming the keys and the command that measures them; with
    strict=False, latencies that need a missing key are NaN.

    calibration: ``latency_ms`` (and `expected`) become a · T_table + Σ_kind b_kind · n_kind
    + c (`latency_tables.calibration`); ``table_ms`` is always the raw table sum.
    """

    def __init__(
        self,
        space: SearchSpace,
        table: LatencyTable | None = None,
        strict: bool = True,
        structure: SpaceStructure | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.space = space
        self.calibration = calibration
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
        self._build_gather()

    def _build_gather(self) -> None:
        """Flatten every cost into one table over (block, combo, slot, option of the slot's
        quant label), so that a batch of samples costs one index computation per block and
        one gather per cost instead of a dozen array passes per layer slot."""
        st = self.structure
        n_labels = len(st.labels)
        width = st.kernel.shape[1]
        self._slot_label: list[np.ndarray] = []  # per block (C, S'): label column, or n_labels
        self._slot_base: list[np.ndarray] = []  # per block (C, S'): flat offset of option 0
        self._glue: list[np.ndarray] = []  # per block (C,): calibration b_kind, 0 if absent
        tables: dict[str, list[np.ndarray]] = {w: [] for w in COSTS}
        cal = self.calibration
        offset = 0
        for t, frac, lat in zip(st.blocks, self._frac, self._lat):
            n_c, n_s = frac.shape
            lab = t.label if t.label.shape[1] else np.full((n_c, 1), -1, dtype=np.int64)
            has = lab >= 0
            safe = np.maximum(lab, 0)
            kern = np.where(has[..., None], st.kernel[safe], FP32)  # (C, S', O)
            bits = np.where(has[..., None], st.w_bits[safe], 32.0)
            f = frac[..., None]
            # A block without conv/linear layers costs its fp32 entry, once (slot 0).
            if not t.label.shape[1]:
                f = np.ones_like(f)
            lat_cso = np.take_along_axis(lat[:, None, :], kern.reshape(n_c, 1, -1), 2).reshape(
                kern.shape
            )
            # padded slots (f = 0) must not turn a missing entry's NaN into a cost
            raw = np.where(f > 0, f * lat_cso, 0.0)
            tables["table_ms"].append(raw.ravel())
            if cal is not None:
                # a · T + b_kind once per present block (on its first slot)
                glue = np.array(
                    [0.0 if sh is None else cal.per_block.get(sh[0], 0.0) for sh in t.shapes]
                )
                self._glue.append(glue)
                raw = cal.scale * raw
                raw[:, 0, :] += glue[:, None]
            tables["latency_ms"].append(raw.ravel())
            params = t.params if t.label.shape[1] else np.zeros((n_c, 1))
            macs = t.macs if t.label.shape[1] else np.zeros((n_c, 1))
            tables["params"].append(np.broadcast_to(params[..., None], kern.shape).ravel())
            tables["macs"].append(np.broadcast_to(macs[..., None], kern.shape).ravel())
            tables["bytes"].append((params[..., None] * bits / 8.0).ravel())
            self._slot_label.append(np.where(has, lab, n_labels))
            self._slot_base.append(offset + np.arange(n_c * n_s).reshape(n_c, n_s) * width)
            offset += n_c * n_s * width
        self._tables = {w: np.concatenate(v) for w, v in tables.items()}
        # int32 indices halve the memory traffic of the hot path when the tables allow it
        self._index_dtype = np.int32 if offset < 2**31 else np.int64
        self._slot_label = [a.astype(self._index_dtype) for a in self._slot_label]
        self._slot_base = [a.astype(self._index_dtype) for a in self._slot_base]

    # -- vectorized -------------------------------------------------------------------------
    def predict_index(
        self, idx: np.ndarray, what: Sequence[str] = ("latency_ms",), chunk: int = 2048
    ) -> dict[str, np.ndarray]:
        """Costs of samples given as an option-index matrix (N, labels)."""
        unknown = sorted(set(what) - set(self._tables))
        if unknown:
            raise ConfigError(f"unknown cost(s) {unknown}; choose from {sorted(self._tables)}")
        if {"latency_ms", "table_ms"} & set(what) and self.table is None:
            raise ConfigError("this CostModel has no latency table; pass one to predict latency")
        idx = np.asarray(idx)
        out = {w: np.empty(len(idx)) for w in what}
        # Chunks keep the (rows, slots) index matrix in cache.
        for lo in range(0, len(idx), chunk):
            flat = self._flat_index(idx[lo : lo + chunk])
            for w in what:
                out[w][lo : lo + chunk] = self._tables[w][flat].sum(1)
        if "latency_ms" in out and self.calibration is not None:
            out["latency_ms"] += self.calibration.intercept
        return out

    def _flat_index(self, idx: np.ndarray) -> np.ndarray:
        """(N, slots) positions in the flattened cost tables of each sample's layer slots."""
        st = self.structure
        n, width = idx.shape
        # A last all-zero column is the "option" of slots without a quant label; np.take on
        # the raveled matrix is several times faster than 2-D fancy indexing.
        dtype = self._index_dtype if n * (width + 1) < 2**31 else np.int64
        ext = np.zeros((n, width + 1), dtype=dtype)
        ext[:, :width] = idx
        flat = ext.ravel()
        row = (np.arange(n, dtype=dtype) * (width + 1))[:, None]
        parts = []
        combos: dict[tuple[int, ...], np.ndarray] = {}  # blocks often share dependency labels
        for t, lab, base in zip(st.blocks, self._slot_label, self._slot_base):
            c = combos.get(t.deps)
            if c is None:
                c = combos[t.deps] = t.combo_index(idx)  # (N,)
            parts.append(np.take(base, c, axis=0) + np.take(flat, np.take(lab, c, axis=0) + row))
        return np.concatenate(parts, 1)

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
        glue = torch.zeros((), dtype=dtype, device=dev)
        cal = self.calibration
        for i, (t, frac, lat) in enumerate(zip(st.blocks, self._frac, self._lat)):
            pc = torch.ones((), dtype=dtype, device=dev)
            for d in t.deps:  # P(c) = outer product of the dependency labels' probabilities
                pc = torch.outer(pc.reshape(-1), vecs[d]).reshape(-1)
            pc = pc.reshape(-1)
            tck = torch.as_tensor(np.nan_to_num(lat, nan=0.0), dtype=dtype, device=dev)  # (C, K)
            if cal is not None:  # b_kind · P(block present)
                b = torch.as_tensor(self._glue[i], dtype=dtype, device=dev)
                glue = glue + (pc * b).sum()
            if t.label.shape[1] == 0:
                total = total + (pc * tck[:, FP32]).sum()
                continue
            qcs = qmat[torch.as_tensor(t.label, device=dev)]  # (C, S, K)
            per_slot = (qcs * tck[:, None, :]).sum(-1)  # (C, S)
            f = torch.as_tensor(frac, dtype=dtype, device=dev)
            total = total + (pc * (f * per_slot).sum(1)).sum()
        if cal is not None:
            return cal.scale * total + glue + cal.intercept
        return total
