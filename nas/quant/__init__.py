"""Quantization schemes as data, fake-quant handlers per method, quant-aware layers."""

from nas.quant import methods as _methods  # noqa: F401  (registers the handlers)
from nas.quant.fake import fake_quant_act, fake_quant_weight
from nas.quant.layers import QuantConv2d, QuantLinear, QuantMixin, quant_plan, set_quant_enabled
from nas.quant.methods import METHODS, QuantMethod
from nas.quant.scheme import FP16, FP32, QuantScheme

__all__ = [
    "FP16",
    "FP32",
    "METHODS",
    "QuantConv2d",
    "QuantLinear",
    "QuantMethod",
    "QuantMixin",
    "QuantScheme",
    "fake_quant_act",
    "fake_quant_weight",
    "quant_plan",
    "set_quant_enabled",
]
