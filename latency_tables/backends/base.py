"""Measurement backends: time a block's micro-model (or a whole model) on a runtime.

A backend receives a float torch module, its example inputs and a *kernel
plan* (which conv/linear runs which kernel class) and returns a
`Measurement` over warm-up plus timed runs. How a kernel class becomes real
kernels is the backend's business (QDQ int8 on onnxruntime, LiteRT
quantization recipes on tflite, …); a class a runtime has no kernel for is
aliased in `kernel_map` to the one it actually runs, and the table records
that alias in its metadata, so nobody mistakes a fallback for a measurement.
"""

from __future__ import annotations

import functools
import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import Tensor, nn
from typing_extensions import Self

from latency_tables.kernels import KERNEL_DOC, KERNELS, kernel_of
from latency_tables.measurement import Measurement
from nas.registry import Registry

Plan = str | Mapping[str, str]
"""A kernel class for every conv/linear of the module, or module path → kernel class
(layers not named run fp32)."""


def plan_for(module: nn.Module, plan: Plan) -> dict[str, str]:
    """Expand a plan to module path → kernel class for every conv/linear of `module`."""
    layers = [n for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if isinstance(plan, str):
        return dict.fromkeys(layers, plan)
    return {n: plan.get(n, "fp32") for n in layers}


def host_fingerprint() -> dict[str, str]:
    """This machine: what a table measured on the host is valid for."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kind": "host",
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        # The OS, not its kernel release: a table stays valid across kernel updates.
        "os": platform.system(),
    }


class Backend(ABC):
    """Times torch modules on one runtime. Subclasses import their toolchain lazily."""

    name: ClassVar[str]
    # kernel class → kernel class this backend really runs for it (identity when supported)
    kernel_map: ClassVar[dict[str, str]] = {k: k for k in KERNELS}
    # True when every float op of one model runs at a single precision (a runtime-wide
    # fp16 switch): a whole model mixing fp16 and fp32 layers cannot be measured, so
    # end-to-end checks draw models whose float layers share one precision.
    one_float_precision: ClassVar[bool] = False

    def __init__(self, threads: int = 1, warmup: int = 10, runs: int = 50, **options: Any) -> None:
        self.threads = threads
        self.warmup = warmup
        self.runs = runs
        self.options = options

    @abstractmethod
    def runtime(self) -> dict[str, str]:
        """{"runtime": name, "version": version, ...} of the runtime that measures."""

    def fingerprint(self) -> dict[str, str]:
        """The device measured on (the host by default; a phone for adb)."""
        return host_fingerprint()

    def settings(self) -> dict[str, Any]:
        """Everything that changes the numbers: recorded in the table's metadata."""
        return {"threads": self.threads, "warmup": self.warmup, "runs": self.runs, **self.options}

    @abstractmethod
    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        """Latency of `module(*inputs)` with the conv/linear layers on `plan`'s kernels."""

    def prepare(
        self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan
    ) -> Callable[[], Measurement]:
        """Convert once; each call of the result times the converted model again.

        End-to-end checks time many models in interleaved rounds, so that a slow spell
        of a shared machine hits one round of every model rather than every round of one.
        By default each call measures afresh (backends cache conversions by content).
        """
        return functools.partial(self.measure, module, inputs, plan)

    def close(self) -> None:
        """Release devices / sessions (no-op by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS: Registry[type[Backend]] = Registry("latency backend")

__all__ = ["BACKENDS", "KERNELS", "KERNEL_DOC", "Backend", "Plan", "kernel_of", "plan_for"]
