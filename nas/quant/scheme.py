"""Quantization schemes as data.

A `QuantScheme` says how one layer's weights and input activations are
represented: integer bit widths (or 16/32 for float), the method that picks
the quantization grid, and the weight granularity. Latency depends on the
bits (the kernel that runs them); accuracy also depends on the method.

String form (used as search-space options and in `quant_plan.json`):
``fp32``, ``fp16``, ``w8a8:minmax``, ``w4a16:lsq``, ``w8a8:mse:tensor``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nas.errors import ConfigError

FLOAT_BITS = (16, 32)
INT_BITS = (2, 3, 4, 5, 6, 7, 8)
GRANULARITIES = ("channel", "tensor")
_PATTERN = re.compile(r"^w(\d+)a(\d+):([a-z0-9_]+)(?::(channel|tensor))?$")


@dataclass(frozen=True, order=True)
class QuantScheme:
    """How a layer is quantized.

    w_bits / a_bits: 2..8 for integer grids, 16 or 32 for float (fp16 is
    emulated by a round trip through half precision). `method` names a
    registered fake-quant handler (see `nas.quant.methods`); `granularity`
    applies to weights (activations are always per tensor).
    """

    w_bits: int = 32
    a_bits: int = 32
    method: str = "minmax"
    granularity: str = "channel"

    def __post_init__(self) -> None:
        for field, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits)):
            if bits not in INT_BITS + FLOAT_BITS:
                raise ConfigError(
                    f"QuantScheme.{field}={bits!r} is not supported; use one of "
                    f"{list(INT_BITS + FLOAT_BITS)} (16/32 mean float)"
                )
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"QuantScheme.granularity={self.granularity!r}; allowed: {list(GRANULARITIES)}"
            )
        # Imported here: methods register themselves on import of nas.quant.
        from nas.quant.methods import METHODS

        if self.method not in METHODS:
            raise ConfigError(
                f"QuantScheme.method={self.method!r} is unknown; registered: {METHODS.names()}"
            )

    @property
    def is_float(self) -> bool:
        return self.w_bits in FLOAT_BITS and self.a_bits in FLOAT_BITS

    @property
    def quantizes_weights(self) -> bool:
        return self.w_bits in INT_BITS

    @property
    def quantizes_acts(self) -> bool:
        return self.a_bits in INT_BITS

    @property
    def name(self) -> str:
        if self.is_float and self.w_bits == self.a_bits:
            return f"fp{self.w_bits}"
        suffix = "" if self.granularity == "channel" else f":{self.granularity}"
        return f"w{self.w_bits}a{self.a_bits}:{self.method}{suffix}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str | QuantScheme) -> QuantScheme:
        """Parse ``fp32``, ``fp16`` or ``w{bits}a{bits}:{method}[:{granularity}]``."""
        if isinstance(text, QuantScheme):
            return text
        if text in ("fp32", "fp16"):
            bits = int(text[2:])
            return cls(bits, bits)
        m = _PATTERN.match(str(text))
        if not m:
            raise ConfigError(
                f"cannot parse quant scheme {text!r}; write 'fp32', 'fp16' or "
                "'w<bits>a<bits>:<method>[:channel|tensor]', e.g. 'w8a8:minmax' or 'w4a16:lsq'"
            )
        w, a, method, gran = m.groups()
        return cls(int(w), int(a), method, gran or "channel")


FP32 = QuantScheme(32, 32)
FP16 = QuantScheme(16, 16)
