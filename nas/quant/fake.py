"""Apply a `QuantScheme` to a weight or an activation tensor."""

from __future__ import annotations

from torch import Tensor

from nas.quant.methods import METHODS
from nas.quant.scheme import QuantScheme


def _fp16(x: Tensor) -> Tensor:
    # Round trip through half precision with a straight-through gradient.
    return x + (x.half().to(x.dtype) - x).detach()


def fake_quant_weight(w: Tensor, scheme: QuantScheme, learned: Tensor | None = None) -> Tensor:
    """Weights as the scheme's kernel would see them (dim 0 = output channels)."""
    if scheme.w_bits == 32:
        return w
    if scheme.w_bits == 16:
        return _fp16(w)
    method = METHODS.get(scheme.method)
    return method.weight(w, scheme.w_bits, scheme.granularity == "channel", learned)


def fake_quant_act(x: Tensor, scheme: QuantScheme, learned: Tensor | None = None) -> Tensor:
    """Input activations as the scheme's kernel would see them (per tensor)."""
    if scheme.a_bits == 32:
        return x
    if scheme.a_bits == 16:
        return _fp16(x)
    return METHODS.get(scheme.method).act(x, scheme.a_bits, learned)
