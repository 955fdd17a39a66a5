"""`ArchSpec`: the frozen description of one concrete architecture.

A tree of stages → blocks → layers. Blocks carry their dimensions (the
fields a latency key is made of); layers carry their width and quant scheme.
Search produces specs; the cost model and export consume them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.quant.scheme import QuantScheme

Value = int | float | str | bool | None
Sample = dict[str, Any]


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON: the basis of stable hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _frozen(mapping: Mapping[str, Value] | tuple) -> tuple[tuple[str, Value], ...]:
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple((str(k), v) for k, v in items)


KERNEL_AREA = {"linear": 1, "conv1x1": 1, "conv3x3": 9, "conv3x3_s2": 9}


@dataclass(frozen=True)
class LayerSpec:
    """One conv or linear layer of a concrete architecture.

    path: module path in the standalone model; kind: ``linear``, ``conv1x1``,
    ``conv3x3`` or ``conv3x3_s2``; `positions`: output pixels or tokens it
    runs over for one sample (so MACs = in · out · kernel area · positions);
    `label`: the search-space label that chose its quant scheme ("" if none).
    """

    path: str
    kind: str
    in_features: int
    out_features: int
    quant: QuantScheme = field(default_factory=QuantScheme)
    positions: int = 1
    label: str = ""

    @property
    def params(self) -> int:
        """Weights (without bias) — what the quant scheme's weight bits apply to."""
        return self.in_features * self.out_features * KERNEL_AREA.get(self.kind, 1)

    @property
    def macs(self) -> int:
        return self.params * self.positions

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "in": self.in_features,
            "out": self.out_features,
            "quant": str(self.quant),
            "positions": self.positions,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSpec:
        return cls(
            d["path"],
            d["kind"],
            d["in"],
            d["out"],
            QuantScheme.parse(d["quant"]),
            d.get("positions", 1),
            d.get("label", ""),
        )


@dataclass(frozen=True)
class BlockSpec:
    """One block (ResNet, transformer, sampler, embedding…) with its dimensions."""

    path: str
    kind: str
    dims: tuple[tuple[str, Value], ...] = ()
    layers: tuple[LayerSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", _frozen(self.dims))
        object.__setattr__(self, "layers", tuple(self.layers))

    def dim(self, name: str) -> Value:
        return dict(self.dims)[name]

    @property
    def d(self) -> dict[str, Value]:
        return dict(self.dims)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "dims": dict(self.dims),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BlockSpec:
        layers = tuple(LayerSpec.from_dict(x) for x in d.get("layers", ()))
        return cls(d["path"], d["kind"], tuple(d.get("dims", {}).items()), layers)


@dataclass(frozen=True)
class StageSpec:
    """A group of blocks at one resolution (or one segment of a DiT)."""

    name: str
    blocks: tuple[BlockSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageSpec:
        return cls(d["name"], tuple(BlockSpec.from_dict(b) for b in d.get("blocks", ())))


@dataclass(frozen=True)
class ArchSpec:
    """A concrete architecture of a named space: the sample and its structure."""

    space: str
    version: str
    sample: tuple[tuple[str, Value], ...]
    stages: tuple[StageSpec, ...] = ()
    meta: tuple[tuple[str, Value], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample", _frozen(self.sample))
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "meta", _frozen(self.meta))

    @property
    def sample_dict(self) -> Sample:
        return dict(self.sample)

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return tuple(b for s in self.stages for b in s.blocks)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return tuple(layer for b in self.blocks for layer in b.layers)

    @property
    def hash(self) -> str:
        """Stable across processes and versions of Python: sha256 of canonical JSON."""
        payload = canonical_json([self.space, self.version, dict(self.sample)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def short(self) -> str:
        """A short human string: per stage its block kinds and width, the quant mix, hash.

        e.g. ``mobile_unet[down.0:2r+2ti+2t+1d@64 … ] {fp32×200,w8a8:lsq×112} #acaaef2d``
        (kinds abbreviated by initials: r = resnet, ti = transformer_io, …).
        """
        parts = []
        for stage in self.stages:
            kinds: dict[str, int] = {}
            for b in stage.blocks:
                abbrev = "".join(w[0] for w in b.kind.split("_") if w)
                kinds[abbrev] = kinds.get(abbrev, 0) + 1
            widths = [
                v
                for b in stage.blocks
                for k, v in b.dims
                if k in ("out", "width") and isinstance(v, int)
            ]
            width = f"@{max(widths)}" if widths else ""
            parts.append(f"{stage.name}:{'+'.join(f'{n}{k}' for k, n in kinds.items())}{width}")
        quants: dict[str, int] = {}
        for layer in self.layers:
            quants[str(layer.quant)] = quants.get(str(layer.quant), 0) + 1
        q = ",".join(f"{k}×{v}" for k, v in sorted(quants.items(), key=lambda kv: -kv[1]))
        body = " ".join(parts) if parts else ",".join(f"{k}={v}" for k, v in self.sample)
        return f"{self.space}[{body}]{' {' + q + '}' if q else ''} #{self.hash[:8]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "version": self.version,
            "hash": self.hash,
            "sample": dict(self.sample),
            "stages": [s.to_dict() for s in self.stages],
            "meta": dict(self.meta),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchSpec:
        return cls(
            d["space"],
            d["version"],
            tuple(d["sample"].items()),
            tuple(StageSpec.from_dict(s) for s in d.get("stages", ())),
            tuple(d.get("meta", {}).items()),
        )

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))
