"""The cost model: latency (from a table), params, MACs and bytes of many samples at once.

Vectorized over samples with numpy (`predict_index` takes the option-index
matrix of `SearchSpace.encode(kind="index")`), and differentiable for
one-shot search (`expected`): given independent per-label probabilities p_L,

    E[T] = Σ_blocks Σ_c P(c) Σ_s frac(c, s) Σ_o p_{q(c,s)}(o) · T(shape(c), kernel(o))

where c ranges over the block's dependency-label combos with P(c) = Π_L p_L(c_L),
s over its layers (frac = the layer's MAC share, see `latency_tables.keys`) and o
over the options of the layer's quant label. A soft channel count between two
options is the linear interpolation of their entries (`soft_choice`). Every term is one
cell (block, combo, slot, option) of the flat table `predict_index` gathers from, and a
calibration (eq. (1) of `latency_tables.residual`: a · T plus residual features summed
over the same cells) is folded into those cells, so the expectation stays exact and
one-hot probabilities reproduce `predict_index`.

A space without layer structure (declared with `SearchSpace.from_choices`, or whose builder
emits no conv/linear layer) has a cost model too, one that knows no cost:
`CostModel.available_costs` is empty and asking for a cost raises a `ConfigError` that says
what to do instead. Labels no block depends on (`SpaceStructure.neutral_labels`) add nothing
to any cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from latency_tables.calibration import Calibration
from latency_tables.kernels import KERNELS
from latency_tables.keys import BlockKey
from latency_tables.residual import FEATURES, cell_features, cell_inputs, check_features
from latency_tables.structure import KERNEL_INDEX, SpaceStructure
from latency_tables.table import LatencyTable
from nas.errors import ConfigError, MissingLatencyEntryError

# one implementation for the cost model and the PaS masks (nas never imports latency_tables)
from nas.policies.pas import soft_probs as soft_choice  # noqa: F401  (re-exported)
from nas.space import SearchSpace
from nas.spec import ArchSpec

log = logging.getLogger(__name__)

FP32 = KERNEL_INDEX["fp32"]
#: What `CostModel.costs` predicts (objective and budget names a config may use).
COSTS = ("table_ms", "latency_ms", "params", "macs", "bytes")
#: The costs summed over the layers of a spec (known without a latency table).
LAYER_COSTS = ("params", "macs", "bytes")
#: The costs read from a latency table.
TABLE_COSTS = ("table_ms", "latency_ms")


class CostModel:
    """Costs of a space's samples: ``latency_ms`` (needs a table), ``params``, ``macs``, ``bytes``.

    strict: a key of the space missing from the table raises `MissingLatencyEntryError`
    at construction, naming the keys and the command that measures them; with
    strict=False, latencies that need a missing key are NaN.

    calibration: ``latency_ms`` (and `expected`) become a · T_table + Σ_f w_f · F_f + c, over
    residual features that scale with tensor sizes (`latency_tables.residual`, fitted by
    `latency_tables.calibration`); ``table_ms`` is always the raw table sum, plus the
    table's per-inference ``overhead_ms`` when its meta has one (an adapted table's, see
    `latency_tables.transfer`).

    A space whose specs have no conv/linear layer (`has_structure` False, e.g. one declared
    with `SearchSpace.from_choices`) still gets a cost model, whose `available_costs` is
    empty; callers pick their cost features and weak labels from `available_costs`.
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
        # per inference, owned by no block (an adapted table's fitted c, `transfer`); 0 else
        self.overhead_ms = float(table.meta.get("overhead_ms", 0.0)) if table else 0.0
        st = self.structure
        self._has_structure = st.has_layers
        if not self._has_structure:
            log.info(
                "space %r has no layer structure (its specs have no conv/linear layer): its "
                "cost model knows no cost",
                space.name,
            )
        elif st.neutral_labels:
            # deliberate: costs are those of the declared layers, whatever these labels say
            log.info(
                "space %r: no block depends on label(s) %s; no cost varies with them",
                space.name,
                st.neutral_labels,
            )
        self._frac = []  # per block: (C, S) MAC share of each layer in its block
        self._lat = []  # per block: (C, K) latency of the combo's shape on each kernel
        for t in st.blocks:
            tot = t.macs.sum(1, keepdims=True)
            frac = np.divide(t.macs, tot, out=np.zeros_like(t.macs), where=tot > 0)
            # A block with no MACs (no conv/linear) is timed on its fp32 entry alone.
            if t.label.shape[1] == 0:
                frac = np.zeros((len(t.shapes), 1))
            else:
                # Per combo too: where one option convolves and another pools (a NAS cell's
                # edge), the pooling combo has no MACs; its padded slot 0 has no quant label,
                # so a full share there times it on fp32, as `keys.block_kernel_shares` does.
                bare = np.array([s is not None for s in t.shapes]) & (tot[:, 0] == 0)
                frac[bare, 0] = 1.0
            self._frac.append(frac)
            self._lat.append(np.full((len(t.shapes), len(KERNELS)), np.nan))
        self.missing: list[str] = []
        # A space without layers is served no latency, so its keys need not be in the table.
        if table is not None and self._has_structure:
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
        tables: dict[str, list[np.ndarray]] = {w: [] for w in COSTS}
        features: dict[str, list[np.ndarray]] = {f: [] for f in FEATURES}
        cal = self.calibration
        kernel_map = self.table.meta.get("kernel_map") if self.table is not None else None
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
            cells = cell_features(cell_inputs(t, kern, kernel_map), tuple(FEATURES))
            for name, v in cells.items():
                features[name].append(v.ravel())
            if cal is not None:  # eq. (1) of latency_tables.residual, cell by cell
                raw = cal.scale * raw
                for name, w in cal.weights.items():
                    raw = raw + w * cells[name]
            tables["latency_ms"].append(raw.ravel())
            params = t.params if t.label.shape[1] else np.zeros((n_c, 1))
            macs = t.macs if t.label.shape[1] else np.zeros((n_c, 1))
            tables["params"].append(np.broadcast_to(params[..., None], kern.shape).ravel())
            tables["macs"].append(np.broadcast_to(macs[..., None], kern.shape).ravel())
            tables["bytes"].append((params[..., None] * bits / 8.0).ravel())
            self._slot_label.append(np.where(has, lab, n_labels))
            self._slot_base.append(offset + np.arange(n_c * n_s).reshape(n_c, n_s) * width)
            offset += n_c * n_s * width
        # no block at all (a from_choices space): empty tables, which no request reaches
        self._tables = {w: np.concatenate(v) if v else np.zeros(0) for w, v in tables.items()}
        self._features = {f: np.concatenate(v) if v else np.zeros(0) for f, v in features.items()}
        # int32 indices halve the memory traffic of the hot path when the tables allow it
        self._index_dtype = np.int32 if offset < 2**31 else np.int64
        self._slot_label = [a.astype(self._index_dtype) for a in self._slot_label]
        self._slot_base = [a.astype(self._index_dtype) for a in self._slot_base]

    # -- what it knows ----------------------------------------------------------------------
    @property
    def has_structure(self) -> bool:
        """Whether the space's specs have conv/linear layers to sum costs over (False for a
        space declared with `SearchSpace.from_choices`: then `available_costs` is empty)."""
        return self._has_structure

    @property
    def available_costs(self) -> tuple[str, ...]:
        """The cost names `costs` and `predict_index` can serve: ``()`` without layer
        structure, ``("params", "macs", "bytes")`` with it, plus ``("table_ms",
        "latency_ms")`` with a latency table."""
        if not self._has_structure:
            return ()
        return LAYER_COSTS + (TABLE_COSTS if self.table is not None else ())

    def _check_available(self, what: Sequence[str]) -> None:
        """Raise the `ConfigError` that says why a requested cost is not known, and what to
        do instead."""
        unknown = sorted(set(what) - set(COSTS))
        if unknown:
            raise ConfigError(f"unknown cost(s) {unknown}; choose from {sorted(COSTS)}")
        wanted = [w for w in what if w not in self.available_costs]
        if not wanted:
            return
        name = self.space.name
        if not self._has_structure:
            raise ConfigError(
                f"space {name!r} has no layer structure: its samples freeze to specs without "
                "conv/linear layers (a space declared with SearchSpace.from_choices has none), "
                f"so its costs {wanted} are unknown, with or without a latency table. Give "
                "this space only strategies and encoders that need no costs (no budgets or "
                "cost objectives, SpaceEncoder without cost features; "
                "CostModel.available_costs is empty), register a family whose builder "
                "declares blocks and layers (nas.register_space), or pass your own "
                "cost_fn(samples) -> {name: array}"
            )
        raise ConfigError(
            f"the CostModel of space {name!r} has no latency table, so it cannot predict "
            f"{wanted}; build it on one (CostModel(space, LatencyTable.load(root, device, "
            "backend)) or latency_tables.opening.open_cost_model, measured with `nas latency "
            f"build --space {name}`), or ask only for {list(self.available_costs)}"
        )

    # -- vectorized -------------------------------------------------------------------------
    def predict_index(
        self, idx: np.ndarray, what: Sequence[str] = ("latency_ms",), chunk: int = 2048
    ) -> dict[str, np.ndarray]:
        """Costs of samples given as an option-index matrix (N, labels); `what` must be
        among `available_costs` (else a `ConfigError` that says why not)."""
        self._check_available(what)
        idx = np.asarray(idx)
        out = {w: np.empty(len(idx)) for w in what}
        # Chunks keep the (rows, slots) index matrix in cache.
        for lo in range(0, len(idx), chunk):
            flat = self._flat_index(idx[lo : lo + chunk])
            for w in what:
                out[w][lo : lo + chunk] = self._tables[w][flat].sum(1)
        if "table_ms" in out:
            out["table_ms"] += self.overhead_ms
        if "latency_ms" in out:
            cal = self.calibration
            out["latency_ms"] += (
                self.overhead_ms if cal is None else cal.scale * self.overhead_ms + cal.intercept
            )
        return out

    def features_index(
        self, idx: np.ndarray, names: Sequence[str], chunk: int = 2048
    ) -> np.ndarray:
        """Residual features (`latency_tables.residual`) of samples given as an option-index
        matrix: (N, len(names)), the inputs of a calibration's fit."""
        self._check_available(("latency_ms",))
        names = check_features(list(names))
        idx = np.asarray(idx)
        out = np.empty((len(idx), len(names)))
        for lo in range(0, len(idx), chunk):
            flat = self._flat_index(idx[lo : lo + chunk])
            for j, name in enumerate(names):
                out[lo : lo + chunk, j] = self._features[name][flat].sum(1)
        return out

    def features(
        self, archs: Sequence[Mapping[str, Any] | ArchSpec], names: Sequence[str]
    ) -> np.ndarray:
        """`features_index` of samples or specs."""
        samples = [a.sample_dict if isinstance(a, ArchSpec) else a for a in archs]
        return self.features_index(self.structure.encode(samples), names)

    def _flat_index(self, idx: np.ndarray) -> np.ndarray:
        """(N, slots) positions in the flattened cost tables of each sample's layer slots."""
        st = self.structure
        n, width = idx.shape
        # A last all-zero column is the "option" of slots without a quant label; np.take on
        # the raveled matrix is several times faster than 2-D fancy indexing.
        dtype = self._index_dtype if n * (width + 1) < 2**31 else np.int64
        if not st.blocks:  # nothing to gather (only reached when no cost is asked for)
            return np.zeros((n, 0), dtype=dtype)
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
        self._check_available(("latency_ms",))
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
        # Each block's cells (C, S', O) of the flat latency table, weighted by P(combo) and
        # by the probability of the option its slot's label takes: the same table
        # `predict_index` gathers from, so one-hot probabilities give exactly its value.
        width = st.kernel.shape[1]
        pmat = torch.stack(
            [torch.nn.functional.pad(v, (0, width - len(v))) for v in vecs]
            + [torch.nn.functional.one_hot(torch.tensor(0, device=dev), width).to(dtype)]
        )  # (L + 1, O): the last row is the "option" of slots without a quant label
        total = torch.zeros((), dtype=dtype, device=dev)
        for t, (cells, lab) in zip(st.blocks, self._cells(dev)):
            pc = torch.ones((), dtype=dtype, device=dev)
            for d in t.deps:  # P(c) = outer product of the dependency labels' probabilities
                pc = torch.outer(pc.reshape(-1), vecs[d]).reshape(-1)
            p_opt = pmat[lab]  # (C, S', O)
            total = total + (pc.reshape(-1) * (p_opt * cells).sum((1, 2))).sum()
        cal = self.calibration
        if cal is not None:
            return total + cal.scale * self.overhead_ms + cal.intercept
        return total + self.overhead_ms

    def _cells(self, dev: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, its (C, S', O) cells of the flat ``latency_ms`` table (a missing
        entry's NaN as 0: no probability may reach it) and its (C, S') slot labels, as
        tensors cached per device."""
        cache = self.__dict__.setdefault("_cells_by_device", {})
        if dev not in cache:
            flat = np.nan_to_num(self._tables["latency_ms"], nan=0.0)
            out = []
            width = self.structure.kernel.shape[1]
            for base, lab in zip(self._slot_base, self._slot_label):
                n_c, n_s = base.shape
                lo = int(base.flat[0]) if base.size else 0
                cells = flat[lo : lo + n_c * n_s * width].reshape(n_c, n_s, width)
                out.append(
                    (
                        torch.as_tensor(cells, dtype=torch.float64, device=dev),
                        torch.as_tensor(lab, dtype=torch.long, device=dev),
                    )
                )
            cache[dev] = out
        return cache[dev]
