"""Elastic layers: own the largest weights, run any smaller width by slicing them.

Each layer is the torch layer it extends (same parameter names, same
initialisation), so a supernet's state dict reads like a diffusers model's.
Left unconfigured it *is* that layer at full size; the standalone (exported)
models are built of the same classes at their exact sizes, which is why an
extracted model computes exactly what the activated supernet computed.

Configuration is explicit, set by a supernet's `activate(sample)`:
`active_in` / `active_out` (see `nas.elastic.functional.ChannelSel`) and
`quant` (the active `QuantScheme`). `sliced_state()` returns the parameters
of the active configuration under the names the standalone layer uses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nas.elastic.functional import ChannelSel, select, slice_vector, slice_weight
from nas.quant.layers import QuantConv2d, QuantLinear, QuantMixin


class Elastic:
    """Marker and shared logic: a layer whose active widths can be set."""

    active_in: ChannelSel = None
    active_out: ChannelSel = None

    def reset_active(self) -> None:
        self.active_in = None
        self.active_out = None
        if isinstance(self, QuantMixin):
            self.quant = None if len(self.quant_candidates) != 1 else self.quant_candidates[0]

    def sliced_state(self) -> dict[str, Tensor]:
        """Parameters of the active configuration, named as in the standalone layer."""
        state: dict[str, Tensor] = {}
        for name, p in self.named_parameters(recurse=False):  # type: ignore[attr-defined]
            if name == "weight" and p.dim() >= 2:
                state[name] = slice_weight(p, self.active_out, self.active_in)
            elif name.startswith("aq_"):
                state[name] = p
            else:
                # bias, per-channel quantizer parameters, norm affine: one entry per output
                # channel (for norms, "output" is the normalised channel set).
                state[name] = slice_vector(p, self.active_out)
        return {k: v.detach().clone() for k, v in state.items()}


class ElasticConv2d(Elastic, QuantConv2d):
    """Conv2d over the first `active_out` filters and the `active_in` input channels."""

    def forward(self, x: Tensor) -> Tensor:
        w = slice_weight(self.weight, self.active_out, self.active_in)
        b = slice_vector(self.bias, self.active_out)
        return self._conv_forward(self.qinput(x), self.qweight(w), b)


class ElasticLinear(Elastic, QuantLinear):
    """Linear over the first `active_out` outputs and the `active_in` input features."""

    def forward(self, x: Tensor) -> Tensor:
        w = slice_weight(self.weight, self.active_out, self.active_in)
        b = slice_vector(self.bias, self.active_out)
        return F.linear(self.qinput(x), self.qweight(w), b)


class ElasticGroupNorm(Elastic, nn.GroupNorm):
    """GroupNorm with a fixed number of groups over the active channels.

    `active_out` selects the channels (a prefix, or segments of a
    concatenation); active widths must be multiples of `num_groups`.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(
            x,
            self.num_groups,
            slice_vector(self.weight, self.active_out),
            slice_vector(self.bias, self.active_out),
            self.eps,
        )


class ElasticLayerNorm(Elastic, nn.LayerNorm):
    """LayerNorm over the first `active_out` features (an int)."""

    def forward(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        return F.layer_norm(
            x,
            (d,),
            slice_vector(self.weight, self.active_out),
            slice_vector(self.bias, self.active_out),
            self.eps,
        )


def configure(
    layer: nn.Module,
    *,
    inp: ChannelSel = None,
    out: ChannelSel = None,
    quant: object = None,
) -> None:
    """Set a layer's active widths (and scheme, when given as a `QuantScheme`)."""
    layer.active_in = inp  # type: ignore[assignment]
    layer.active_out = out  # type: ignore[assignment]
    if quant is not None:
        layer.quant = quant  # type: ignore[assignment]


__all__ = [
    "Elastic",
    "ElasticConv2d",
    "ElasticGroupNorm",
    "ElasticLayerNorm",
    "ElasticLinear",
    "configure",
    "select",
]
