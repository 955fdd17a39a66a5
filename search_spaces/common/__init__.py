"""What the shipped families share: diffusers layers written once, and family plumbing.

- `layers`: the diffusers building blocks both families use under the same names —
  ``TimestepEmbedding`` (``linear_1 → SiLU → linear_2``) and ``FeedForward``
  (``net = [GEGLU | GELU(tanh), Dropout, Linear]``) — over `nas.elastic` layers.
- `family`: plumbing every family needs alike — keyword defaults of a diffusers
  class (teacher config checks), seeded example inputs of a denoiser and moving
  them to a module's device.
- `contract`: how the models meet a diffusers denoiser's call contract — empty
  pipeline inputs ignored, ones a model cannot honour refused with the reason.
"""

from search_spaces.common.family import (
    denoiser_inputs,
    effective_config,
    init_defaults,
    inputs_on,
)
from search_spaces.common.layers import (
    GEGLU,
    FeedForward,
    GELUProj,
    QuantSource,
    TimestepEmbedding,
    quant_for,
)

__all__ = [
    "GEGLU",
    "FeedForward",
    "GELUProj",
    "QuantSource",
    "TimestepEmbedding",
    "denoiser_inputs",
    "effective_config",
    "init_defaults",
    "inputs_on",
    "quant_for",
]
