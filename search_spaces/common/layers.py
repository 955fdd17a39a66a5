"""diffusers layers both families use, written once over `nas.elastic` layers.

Module and parameter names are diffusers' (``linear_1`` / ``linear_2``,
``net.0.proj`` / ``net.2``), so teacher state dicts map by name in both families.

Quantization arguments (`QuantSource`): a family either gives every layer the
same candidate tuple / scheme (a supernet) or a mapping of absolute module paths
to schemes (a standalone model's ``quant_plan``); ``prefix`` is the module's own
path, so `quant_for(quant, f"{prefix}.linear_1")` finds its plan entry. With
``quant=None`` layers are built float, and a family may `init_quant` them later.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from nas.elastic import ElasticLinear, configure, segments
from nas.quant.layers import QuantArg

QuantSource = Mapping[str, QuantArg] | QuantArg


def quant_for(quant: QuantSource, path: str) -> QuantArg:
    """The quant argument of layer `path`: a candidate tuple (supernet) or a plan entry."""
    return quant.get(path) if isinstance(quant, Mapping) else quant


class TimestepEmbedding(nn.Module):
    """diffusers' `TimestepEmbedding` (no conditioning): linear_1 → SiLU → linear_2.

    (B, in_dim) sinusoidal features → (B, dim).
    """

    def __init__(self, in_dim: int, dim: int, quant: QuantSource = None, prefix: str = "") -> None:
        super().__init__()
        self.linear_1 = ElasticLinear(in_dim, dim, quant=quant_for(quant, f"{prefix}.linear_1"))
        self.act = nn.SiLU()
        self.linear_2 = ElasticLinear(dim, dim, quant=quant_for(quant, f"{prefix}.linear_2"))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class GEGLU(nn.Module):
    """diffusers' GEGLU: proj → (h, gate) = chunk(2) → h · gelu(gate) (Shazeer, 2020).

    When elastic, `proj` keeps the first `inner` rows of each half: out segments
    ((0, inner), (max_inner, inner)), so chunk(2) still splits h from gate.
    """

    def __init__(self, dim: int, inner: int, quant: QuantArg = None) -> None:
        super().__init__()
        self.inner = inner
        self.proj = ElasticLinear(dim, 2 * inner, quant=quant)

    def set_active(self, width: int | None, inner: int | None) -> None:
        out = None if inner is None else segments([(inner, self.inner), (inner, self.inner)])
        configure(self.proj, inp=width, out=out)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class GELUProj(nn.Module):
    """diffusers' `GELU(approximate="tanh")` activation module: proj → tanh-GELU."""

    def __init__(self, dim: int, inner: int, quant: QuantArg = None) -> None:
        super().__init__()
        self.proj = ElasticLinear(dim, inner, bias=True, quant=quant)

    def set_active(self, width: int | None, inner: int | None) -> None:
        configure(self.proj, inp=width, out=inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


# diffusers' FeedForward `activation_fn` names → the activation module of ff.net.0.
ACTIVATIONS: dict[str, type[GEGLU | GELUProj]] = {
    "geglu": GEGLU,
    "gelu-approximate": GELUProj,
}


class FeedForward(nn.Module):
    """diffusers' `FeedForward`: net = [activation (with its proj), Dropout, Linear].

    `activation_fn` is diffusers' name: ``"geglu"`` (the SD U-Net's) or
    ``"gelu-approximate"`` (PixArt's). Elastic: the first `inner` units of the
    inner layer and the first `width` channels of the token width.
    """

    def __init__(
        self,
        dim: int,
        inner: int,
        activation_fn: str = "geglu",
        quant: QuantSource = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        act = ACTIVATIONS[activation_fn]
        self.net = nn.ModuleList(
            [
                act(dim, inner, quant_for(quant, f"{prefix}.net.0.proj")),
                nn.Dropout(0.0),
                ElasticLinear(inner, dim, bias=True, quant=quant_for(quant, f"{prefix}.net.2")),
            ]
        )

    def set_active(self, width: int | None, inner: int | None) -> None:
        self.net[0].set_active(width, inner)
        configure(self.net[2], inp=inner, out=width)

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x
