"""What every backend shares: plan checking, calibration inputs, the timing loop,
a content-keyed cache of converted models, and `ConversionError`."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from latency_tables.backends.base import KERNELS, Plan, plan_for
from latency_tables.measurement import Measurement
from nas.errors import MqnasError

log = logging.getLogger(__name__)


class ConversionError(MqnasError):
    """A module could not be turned into a runtime's model for the requested plan."""


def resolve_plan(module: nn.Module, plan: Plan, kernel_map: Mapping[str, str]) -> dict[str, str]:
    """Module path → kernel class the backend really runs, for every conv/linear.

    Raises `ValueError` for an unknown kernel class or a path that is not a
    conv/linear layer of `module` (a typo would otherwise measure fp32 silently).
    """
    requested = [plan] if isinstance(plan, str) else list(plan.values())
    unknown = sorted({k for k in requested if k not in KERNELS})
    if unknown:
        raise ValueError(
            f"unknown kernel class(es) {unknown}; a plan uses one of {list(KERNELS)} "
            "(see latency_tables.backends.base.KERNEL_DOC; kernel_of(scheme) maps a QuantScheme)"
        )
    expanded = plan_for(module, plan)
    if not isinstance(plan, str):
        stray = sorted(set(plan) - set(expanded))
        if stray:
            raise ValueError(
                f"plan names {stray}, which are not conv/linear layers of {type(module).__name__}; "
                f"its conv/linear layers are {sorted(expanded) or '(none)'}"
            )
    return {path: kernel_map[k] for path, k in expanded.items()}


def calibration_inputs(
    inputs: Sequence[Tensor], n: int = 4, seed: int = 0
) -> list[tuple[Tensor, ...]]:
    """`n` input tuples for static-quantization calibration: the example, then random
    draws with each float input's mean and std (a one-element float input, e.g. a
    timestep, is drawn from 0 … 2·|t|; integer inputs are kept as given)."""
    gen = torch.Generator().manual_seed(seed)
    batches = [tuple(t.detach().cpu() for t in inputs)]
    for _ in range(n - 1):
        batch = []
        for t in inputs:
            t = t.detach().cpu()
            if t.is_floating_point() and t.numel() > 1:
                noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
                batch.append(noise * t.std() + t.mean())
            elif t.is_floating_point():  # a scalar such as a timestep: 0 … 2·|t|
                batch.append(t.abs() * 2 * torch.rand(t.shape, generator=gen, dtype=t.dtype))
            else:
                batch.append(t)
        batches.append(tuple(batch))
    return batches


def content_key(module: nn.Module, inputs: Sequence[Tensor], *extra: object) -> str:
    """A hash of what a conversion depends on: the module's class, structure and state,
    the input shapes/dtypes and `extra` (e.g. the plan). Hashing is cheap next to a
    conversion (~20 ms for 30 MB of weights vs. ~1 s)."""
    h = hashlib.sha256()
    cls = type(module)
    h.update(f"{cls.__module__}.{cls.__qualname__}|{module!r}|{extra!r}".encode())
    for t in inputs:
        h.update(f"|{tuple(t.shape)}:{t.dtype}".encode())
    for name, value in module.state_dict().items():
        value = value.detach().cpu().contiguous()
        h.update(f"|{name}:{tuple(value.shape)}:{value.dtype}".encode())
        h.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


class LRU:
    """A tiny least-recently-used cache of converted models (bytes) by content key."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def time_runs(
    run: Callable[[], object], warmup: int, runs: int, sync: Callable[[], None] | None = None
) -> Measurement:
    """Call `run` `warmup` times untimed, then `runs` times timed one by one (ms)."""
    if runs < 1:
        raise ValueError(f"runs must be ≥ 1 to measure anything; got {runs}")
    for _ in range(warmup):
        run()
    times: list[float] = []
    for _ in range(runs):
        if sync is not None:
            sync()
        t0 = time.perf_counter_ns()
        run()
        if sync is not None:
            sync()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return Measurement.from_times_ms(times)
