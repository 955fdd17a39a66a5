"""`torch` backend: eager PyTorch, timed under `torch.inference_mode()`.

Kernels: fp32 is real. fp16 is real on a GPU (`device="cuda"` or `"mps"`):
the planned layers run in half precision, fed and read through casts; on
the CPU it is aliased to fp32 — PyTorch's CPU half-precision conv/linear is
an emulation slower than fp32, not a kernel any deployment would choose.
The integer classes are aliased to fp32: eager PyTorch has no int8
conv path we want to depend on (the quantized engines are being moved out
of core, see `torchao`), and the runtimes that matter are measured by the
other backends.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from latency_tables.backends.base import BACKENDS, Backend, Plan
from latency_tables.backends.common import resolve_plan, time_runs
from latency_tables.measurement import Measurement

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- backend


class _Half(nn.Module):
    """Runs `inner` in float16 and hands float32 on: one layer of a mixed fp16 plan."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.half()).float()


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


_CPU_MAP = {
    "fp32": "fp32",
    "fp16": "fp32",
    "int8": "fp32",
    "w8": "fp32",
    "w4a8": "fp32",
    "w4": "fp32",
}


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """Eager PyTorch on `device` (option; default "cpu"), `torch.set_num_threads(threads)`."""

    name = "torch"
    kernel_map = _CPU_MAP

    def __init__(self, threads: int = 1, warmup: int = 10, runs: int = 50, **options: Any) -> None:
        options.setdefault("device", "cpu")
        super().__init__(threads, warmup, runs, **options)
        self.device = torch.device(options["device"])
        if self.device.type in ("cuda", "mps"):  # real half-precision kernels
            self.kernel_map = {**_CPU_MAP, "fp16": "fp16"}  # type: ignore[misc]

    def runtime(self) -> dict[str, str]:
        info = {"runtime": "torch", "version": torch.__version__, "device": str(self.device)}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def _sync(self) -> Callable[[], None] | None:
        if self.device.type == "cuda":
            return lambda: torch.cuda.synchronize(self.device)
        if self.device.type == "mps":
            return torch.mps.synchronize
        return None

    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        kernels = resolve_plan(module, plan, self.kernel_map)
        half = [p for p, k in kernels.items() if k == "fp16"]
        if self.device.type != "cpu" or half:
            module = copy.deepcopy(module).to(self.device)
            inputs = tuple(t.to(self.device) for t in inputs)
        if half and len(half) == len(kernels):
            # The whole block in fp16 (norms too), as an fp16 deployment runs it.
            module = module.half()
            inputs = tuple(t.half() if t.is_floating_point() else t for t in inputs)
        else:
            for path in half:
                _set_submodule(module, path, _Half(module.get_submodule(path)))
        was_training, threads = module.training, torch.get_num_threads()
        module.eval()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return time_runs(lambda: module(*inputs), self.warmup, self.runs, self._sync())
        finally:
            torch.set_num_threads(threads)
            module.train(was_training)
