"""Kernel classes: what a quant scheme costs at run time.

Methods that run on the same kernel (minmax, lsq, pact … at w8a8) share one
latency entry: accuracy differs between methods, latency does not.
"""

from __future__ import annotations

from nas.quant.scheme import QuantScheme

# Kernel classes: what a quant scheme costs at run time. Methods that run on the same
# kernel (minmax / lsq / pact … at w8a8) share one latency entry.
KERNELS = ("fp32", "fp16", "int8", "w8", "w4a8", "w4")
KERNEL_DOC = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights and activations",
    "int8": "int8 weights (≥5 bits) and int8 activations",
    "w8": "int8 weights (≥5 bits), float activations (weight-only / dynamic range)",
    "w4a8": "int4 weights (≤4 bits) and int8 activations",
    "w4": "int4 weights (≤4 bits), float activations (weight-only)",
}


def kernel_of(scheme: QuantScheme) -> str:
    """The kernel class that runs a quant scheme."""
    if scheme.quantizes_weights:
        low = scheme.w_bits <= 4
        if scheme.quantizes_acts:
            return "w4a8" if low else "int8"
        return "w4" if low else "w8"
    # Float weights: activation-only integer quantization has no kernel of its own.
    return "fp16" if scheme.w_bits == 16 else "fp32"
