"""Differentiable one-shot policies: DQSS scheme mixing, PaS channel masks, depth gates.

`DifferentiablePolicy(supernet, search=("quant", "width", "depth"))` owns the architecture
parameters of a supernet and makes them differentiable through hooks; see
`nas.policies.differentiable`. The strategy that trains them is
`nas.strategies.oneshot.OneShotSearch`.
"""

from nas.policies.depth import DepthGates, DepthUnit, depth_units
from nas.policies.differentiable import SEARCHABLE, DifferentiablePolicy
from nas.policies.dqss import (
    QuantStrategyMixing,
    k_path_forward,
    product_mixture_forward,
    quantizer_parameters,
)
from nas.policies.pas import ChannelMasks, ChannelSite, Segment, probe_channel_sites, soft_probs

__all__ = [
    "SEARCHABLE",
    "ChannelMasks",
    "ChannelSite",
    "DepthGates",
    "DepthUnit",
    "DifferentiablePolicy",
    "QuantStrategyMixing",
    "Segment",
    "depth_units",
    "k_path_forward",
    "probe_channel_sites",
    "product_mixture_forward",
    "quantizer_parameters",
    "soft_probs",
]
