"""Registered measurement backends; each imports its toolchain only when it measures."""

from latency_tables.backends import adb_phone as _adb  # noqa: F401
from latency_tables.backends import executorch as _executorch  # noqa: F401
from latency_tables.backends import onnxruntime as _ort  # noqa: F401
from latency_tables.backends import tflite as _tflite  # noqa: F401
from latency_tables.backends import torch_eager as _torch  # noqa: F401
from latency_tables.backends.base import BACKENDS, KERNELS, Backend, kernel_of, plan_for

__all__ = ["BACKENDS", "KERNELS", "Backend", "kernel_of", "plan_for"]
