"""Test kit: a synthetic latency table for a space, for tests and examples that need a
`CostModel` without measuring anything.

`synthetic_table` holds, for every key the space can produce, a latency proportional to
the block's MACs times a per-kernel factor (integer kernels cheaper than float):
synthetic, but monotone in the architecture, which is what latency-term tests need.
It is labelled device "synthetic", backend "macs", so it is never mistaken for a
measurement.
"""

from __future__ import annotations

from pathlib import Path

from latency_tables.keys import shape_id
from latency_tables.measurement import Measurement
from latency_tables.structure import SpaceStructure
from latency_tables.table import Entry, LatencyTable
from nas.space import SearchSpace

#: ms per MAC of each kernel class, relative to fp32
KERNEL_FACTOR = {"fp32": 1.0, "fp16": 0.6, "int8": 0.35, "w8": 0.7, "w4a8": 0.25, "w4": 0.6}


def synthetic_table(space: SearchSpace, root: str | Path) -> LatencyTable:
    """A table with every key of `space`: ms = 0.01 + MACs · 1e-6 · KERNEL_FACTOR[kernel]."""
    st = SpaceStructure(space)
    macs: dict[str, float] = {}
    for t in st.blocks:
        for c, s in enumerate(t.shapes):
            if s is not None:
                macs[shape_id(*s)] = float(t.macs[c].sum())
    table = LatencyTable.create(root, "synthetic", "macs", {"fingerprint": {"kind": "test"}})
    for k in st.block_keys():
        ms = 0.01 + macs[k.shape] * 1e-6 * KERNEL_FACTOR[k.kernel]
        table.add(Entry(k, Measurement(ms, ms, 0.0, 1, ms)))
    return table


__all__ = ["KERNEL_FACTOR", "synthetic_table"]
