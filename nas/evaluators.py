"""Evaluators: score one architecture and return its `Trial`.

- `SupernetEvaluator`: inherited weights, validation loss on the task's fixed
  batches — cheap (one forward pass over the validation set), the weak label.
- `FinetuneEvaluator`: extract the sub-network, train it N steps (QAT with its
  quant plan), validation loss — expensive, the strong label.

Both take a `cost_fn(samples) -> {name: array}` (a `CostModel.costs`) so every
trial carries its predicted costs beside its metrics.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nas.supernet import Supernet
from nas.tasks.base import Task
from nas.trials import Trial

log = logging.getLogger(__name__)

CostFn = Callable[[Sequence[Mapping[str, Any]]], Mapping[str, np.ndarray]]


def trial_costs(cost_fn: CostFn | None, sample: Mapping[str, Any]) -> dict[str, float]:
    if cost_fn is None:
        return {}
    return {k: float(v[0]) for k, v in cost_fn([sample]).items()}


class Evaluator:
    """Scores samples of `supernet`'s space on `task`."""

    kind = "evaluator"
    #: The metrics `metrics()` returns (what a config may name as an objective).
    metric_names: tuple[str, ...] = ("val_loss",)

    def __init__(self, supernet: Supernet, task: Task, cost_fn: CostFn | None = None) -> None:
        self.supernet = supernet
        self.task = task
        self.cost_fn = cost_fn

    def metrics(self, sample: Mapping[str, Any], report: Callable[[dict], None] | None) -> dict:
        raise NotImplementedError

    def evaluate(
        self,
        sample: Mapping[str, Any],
        trial_id: str | None = None,
        report: Callable[[dict[str, float]], None] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> Trial:
        """The trial of `sample`; an exception inside becomes a failed trial, not a crash."""
        space = self.supernet.space
        s = space.canonical(sample)
        t0 = time.perf_counter()
        state, error, metrics = "completed", None, {}
        try:
            metrics = self.metrics(s, report)
            bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
            if bad:  # a NaN loss would pass budget filters and rank as a result
                raise FloatingPointError(f"non-finite metrics {bad}")
        except Exception as e:  # noqa: BLE001  (a failing architecture is a result, not a crash)
            log.warning("evaluation of %s failed: %s", space.freeze(s).short(), e)
            state, error = "failed", f"{type(e).__name__}: {e}"
        return Trial(
            id=trial_id or uuid.uuid4().hex[:12],
            sample=dict(s),
            spec_hash=space.freeze(s).hash,
            metrics=metrics,
            cost=trial_costs(self.cost_fn, s),
            state=state,
            timings={"evaluate_s": time.perf_counter() - t0},
            provenance={"evaluator": self.kind, "host": socket.gethostname(), **(provenance or {})},
            error=error,
            created=time.time(),
        )


class SupernetEvaluator(Evaluator):
    """Validation loss of the sub-network with the supernet's inherited weights."""

    kind = "supernet"
    metric_names = ("val_loss",)

    def metrics(self, sample: Mapping[str, Any], report: Callable[[dict], None] | None) -> dict:
        with self.supernet.activate(sample):
            return dict(self.task.validate(self.supernet))

    def score_many(self, samples: Sequence[Mapping[str, Any]], progress: bool = True) -> np.ndarray:
        """Validation losses of many samples (the predictor's weak labels)."""
        from tqdm.auto import tqdm

        out = np.empty(len(samples))
        for i, s in enumerate(tqdm(samples, desc="supernet scores", disable=not progress)):
            with self.supernet.activate(s):
                out[i] = self.task.validate(self.supernet)["val_loss"]
        return out


class FinetuneEvaluator(Evaluator):
    """Extract the sub-network, train it `steps` steps (QAT), validation loss after."""

    kind = "finetune"
    metric_names = ("val_loss", "val_loss_inherited", "train_loss", "steps")

    def __init__(
        self,
        supernet: Supernet,
        task: Task,
        cost_fn: CostFn | None = None,
        *,
        steps: int = 40,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        report_every: int | None = None,
    ) -> None:
        super().__init__(supernet, task, cost_fn)
        self.steps, self.batch_size, self.lr, self.seed = steps, batch_size, lr, seed
        self.report_every = report_every

    def metrics(self, sample: Mapping[str, Any], report: Callable[[dict], None] | None) -> dict:
        from nas.training.finetune import finetune

        model = self.supernet.extract(sample)
        device = next(self.supernet.parameters()).device
        before = self.task.validate(model)["val_loss"]
        chunks = [self.steps]
        if report is not None and self.report_every:
            # intermediate reports let a scheduler (ASHA) stop a poor architecture early
            n, k = divmod(self.steps, self.report_every)
            chunks = [self.report_every] * n + ([k] if k else [])
        done = 0
        for i, steps in enumerate(chunks):
            hist = finetune(
                model,
                self.task,
                steps=steps,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=self.seed + i,
                device=device,
                progress=False,
            )
            done += steps
            if report is not None and i < len(chunks) - 1:
                report({"val_loss": self.task.validate(model)["val_loss"], "steps": done})
        after = self.task.validate(model)
        last = hist[-1]["loss"] if hist else float("nan")
        return {**after, "val_loss_inherited": before, "train_loss": float(last), "steps": done}


def set_threads(n: int | None) -> None:
    """Torch intra-op threads of a trial process (Ray gives each trial its CPUs)."""
    if n:
        torch.set_num_threads(max(1, int(n)))
