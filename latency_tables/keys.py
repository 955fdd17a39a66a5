"""Latency keys: the blocks an architecture is made of, each with one kernel class.

A key is a block kind, its dimensions (channels, resolution, tokens, heads …)
and the kernel class its conv/linear layers run (see
`latency_tables.backends.base.KERNELS`). Keys are block level, not single
ops, so fusion inside a block is measured rather than guessed.

A block whose layers run different kernels (per-layer quant schemes) is
costed as a mix of its uniform-kernel entries, each weighted by the share
of the block's MACs that runs on that kernel:

    T(block) = Σ_k  share_k · T(block, k),   share_k = Σ_{l: kernel(l)=k} MACs_l / Σ_l MACs_l

which is exact when a block's layers dominate its time and add up, and is
corrected by the calibration of `nas latency validate` where they do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from latency_tables.kernels import KERNELS, kernel_of
from nas.errors import ConfigError
from nas.spec import ArchSpec, BlockSpec, Value

__all__ = ["KERNELS", "BlockKey", "block_kernel_shares", "kernel_of", "keys_of", "shape_id"]


def shape_id(kind: str, dims: tuple[tuple[str, Value], ...] | dict[str, Value]) -> str:
    """Stable string of a block shape: ``resnet[H=16,W=16,in=32,inner=16,out=32,temb=128]``."""
    items = sorted(dict(dims).items())
    return f"{kind}[{','.join(f'{k}={json.dumps(v)}' for k, v in items)}]"


@dataclass(frozen=True, order=True)
class BlockKey:
    """One table row: a block shape run on one kernel class."""

    kind: str
    dims: tuple[tuple[str, Value], ...]
    kernel: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(sorted(dict(self.dims).items())))
        if self.kernel not in KERNELS:
            raise ConfigError(f"kernel {self.kernel!r} is not one of {list(KERNELS)}")

    @property
    def shape(self) -> str:
        return shape_id(self.kind, self.dims)

    @property
    def id(self) -> str:
        return f"{self.shape}@{self.kernel}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, key_id: str) -> BlockKey:
        """Inverse of `id`."""
        try:
            shape, kernel = key_id.rsplit("@", 1)
            kind, rest = shape.split("[", 1)
            body = rest[:-1]
            dims = tuple(
                (k, json.loads(v))
                for k, v in (item.split("=", 1) for item in body.split(",") if item)
            )
        except ValueError:
            raise ConfigError(
                f"{key_id!r} is not a latency key id (kind[dim=value,...]@kernel)"
            ) from None
        return cls(kind, dims, kernel)


def block_kernel_shares(block: BlockSpec) -> dict[str, float]:
    """kernel class → share of the block's MACs that runs on it (sums to 1)."""
    macs: dict[str, float] = {}
    for layer in block.layers:
        k = kernel_of(layer.quant)
        macs[k] = macs.get(k, 0.0) + float(layer.macs)
    total = sum(macs.values())
    if total <= 0:
        return {"fp32": 1.0}
    return {k: v / total for k, v in macs.items()}


def keys_of(spec: ArchSpec) -> list[tuple[BlockKey, float]]:
    """The keys one architecture is made of, each with its weight (the kernel share)."""
    return [
        (BlockKey(b.kind, b.dims, k), share)
        for b in spec.blocks
        for k, share in block_kernel_shares(b).items()
    ]
