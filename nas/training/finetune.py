"""Fine-tune one standalone (extracted or exported) model on a task, quantization-aware.

Plain AdamW on the task's own loss, with fake quantization on (QAT with a
straight-through estimator, Bengio et al. 2013, as in `nas.quant.methods`):
every quant-aware layer (`QuantMixin`) runs its scheme — the extracted model's
own, or the one a `quant_plan` (module path → scheme name) assigns — so the
weights adapt to the rounding they will run with on the device. Used by the
fine-tune evaluator and by `nas train`.

Deterministic for a given seed: batches come from `task.batches(batch_size,
seed)` and the noise of step i from a `torch.Generator` seeded by (seed, i).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nas.errors import ConfigError
from nas.quant import QuantMixin, QuantScheme, set_quant_enabled
from nas.tasks.base import Task
from nas.tasks.util import eval_mode
from nas.training.util import device_of, isolated_rng, step_generator

log = logging.getLogger(__name__)


def apply_quant_plan(model: nn.Module, plan: Mapping[str, str | QuantScheme]) -> None:
    """Set the scheme of each quant-aware layer `plan` names (module path → scheme)."""
    for path, scheme in plan.items():
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise ConfigError(
                f"quant plan names module {path!r}, which {type(model).__name__} does not have; "
                "the plan must come from this architecture (Supernet.quant_plan(sample))"
            ) from None
        if not isinstance(layer, QuantMixin):
            raise ConfigError(
                f"quant plan names {path!r}, a {type(layer).__name__}, which is not "
                "quantization-aware (QuantConv2d / QuantLinear / elastic layers)"
            )
        layer.quant = QuantScheme.parse(scheme)


def finetune(
    model: nn.Module,
    task: Task,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    quant_plan: Mapping[str, str | QuantScheme] | None = None,
    quant: bool = True,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    log_every: int = 50,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train `model` in place for `steps` steps; return ``[{step, loss, seconds}, …]``.

    `quant` switches fake quantization of the quant-aware layers on (QAT) or off;
    `quant_plan` first assigns their schemes. The model is left in train mode on `device`.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer ≥ 0, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    dev = torch.device(device) if device is not None else device_of(model)
    model.to(dev)
    if quant_plan is not None:
        apply_quant_plan(model, quant_plan)
    set_quant_enabled(model, quant)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    stream = iter(task.batches(batch_size, seed, dev))
    history: list[dict[str, Any]] = []
    bar = tqdm(range(steps), desc="finetune", unit="step", disable=not progress, dynamic_ncols=True)
    for i in bar:
        t0 = time.perf_counter()
        batch = {k: v.to(dev) for k, v in next(stream).items()}
        gen = step_generator(seed, i)
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch, gen)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        rec = {"step": i + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}")
        if (i + 1) % log_every == 0 or i + 1 == steps:
            log.info("finetune step %d/%d loss=%.4g", i + 1, steps, rec["loss"])
    return history


@dataclass(frozen=True)
class FinetuneResult:
    """Validation metrics before and after fine-tuning, and the loss history."""

    before: dict[str, float]
    after: dict[str, float]
    history: tuple[dict[str, Any], ...]
    seconds: float

    @property
    def val_loss_before(self) -> float:
        return self.before["val_loss"]

    @property
    def val_loss_after(self) -> float:
        return self.after["val_loss"]


def validate(model: nn.Module, task: Task) -> dict[str, float]:
    """`task.validate` in eval mode, without gradients, not touching torch's global RNG."""
    with isolated_rng(device_of(model)), torch.no_grad(), eval_mode(model):
        return {k: float(v) for k, v in task.validate(model).items()}


def evaluate_finetuned(
    model: nn.Module,
    task: Task,
    *,
    steps: int,
    quant: bool = True,
    quant_plan: Mapping[str, str | QuantScheme] | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> FinetuneResult:
    """Validate, `finetune` (in place; `kwargs` go to it), validate again.

    Both validations run with the same quant setting as the fine-tuning, so the
    before/after numbers compare the same (quantized) model.
    """
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else device_of(model)
    model.to(dev)
    if quant_plan is not None:
        apply_quant_plan(model, quant_plan)
    set_quant_enabled(model, quant)
    before = validate(model, task)
    history = finetune(model, task, steps=steps, quant=quant, device=dev, **kwargs)
    after = validate(model, task)
    return FinetuneResult(before, after, tuple(history), time.perf_counter() - t0)
