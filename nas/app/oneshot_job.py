"""The one-shot branch of `nas search`: differentiable search, then the found arch scored.

`OneShotSearch` (DQSS quant strategies, PaS widths, depth gates under the table's
expected latency) returns one discrete architecture; it is fine-tuned with the
same budget a sample-based trial gets and stored as the run's trial, so the
report, export and notebook read a one-shot run like any other.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from nas.config import ExperimentConfig
from nas.io import write_json
from nas.runs import RunDir
from nas.supernet import Supernet
from nas.trials import TrialStore

log = logging.getLogger(__name__)

#: config policy name → the label kinds `DifferentiablePolicy` searches
POLICY_KINDS = {"dqss": "quant", "pas": "width", "depth": "depth"}


def run_oneshot(
    cfg: ExperimentConfig, run: RunDir, supernet: Supernet, task: Any, cost: Any, progress: bool
) -> None:
    from nas.app.build import finetune_evaluator
    from nas.strategies.oneshot import OneShotSearch

    o = cfg.search.oneshot
    assert o is not None  # the config validator requires it for kind: oneshot
    store = TrialStore(run.path)
    if any(t.state == "completed" for t in store.trials()):
        log.info("one-shot search already finished in %s", run.path)
        return
    result = OneShotSearch(
        supernet,
        getattr(task, "base", task),
        cost,
        o.target_ms,
        lam=o.lam,
        lam_schedule=o.lam_schedule,
        penalty=o.penalty,
        steps=o.steps,
        warmup_steps=o.warmup_steps,
        lr_arch=o.lr_arch,
        batch_size=cfg.task.batch_size,
        mode=o.mode,
        calibrate_steps=o.calibrate_steps,
        search=[POLICY_KINDS[p] for p in o.policies],
        discretize=o.discretize,
        device=cfg.device,
        seed=cfg.seed,
    ).run(progress=progress)
    write_json(
        run.oneshot_trace,
        {
            "sample": result.sample,
            "expected_latency_ms": result.expected_latency_ms,
            "sample_latency_ms": result.sample_latency_ms,
            "probabilities": result.probabilities,
            "history": result.history,
        },
    )
    trial = finetune_evaluator(cfg, supernet, task, cost).evaluate(
        result.sample, provenance={"strategy": "oneshot"}
    )
    metrics = {**trial.metrics, "expected_latency_ms": result.expected_latency_ms}
    store.append(replace(trial, metrics=metrics))
    store.snapshot()
