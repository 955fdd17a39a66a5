"""Post-training calibration of learned quantizer parameters, the network's weights frozen.

DQSS' PTQ setting (Li, Yan & Chen, arXiv:2404.08010): a quantization strategy with learned
parameters — LSQ's step (Esser et al., ICLR 2020), PACT's clip α (Choi et al., 2018) — is
calibrated on a few batches of the task's data, by the task loss, before it is compared with
or mixed into others; only its ``wq_<method>`` / ``aq_<method>`` parameters train.
`calibrate_strategies` calibrates each candidate on its own, uniformly over the searched
layers: mixed afterwards, a strategy's parameters would learn from p_k of the gradient only,
so a fresh learned quantizer would be judged half-trained against calibration-free ones
(minmax, percentile, MSE clipping).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from nas.policies.dqss import quantizer_parameters
from nas.quant import METHODS, QuantScheme
from nas.spec import Sample
from nas.tasks.base import Task
from nas.training.finetune import finetune
from nas.training.util import frozen

log = logging.getLogger(__name__)


def learns(scheme: QuantScheme) -> bool:
    """Whether `scheme` has learned quantizer parameters (on the side it quantizes)."""
    method = METHODS.get(scheme.method)
    return (method.learns_weight and scheme.quantizes_weights) or (
        method.learns_act and scheme.quantizes_acts
    )


def calibrate_quantizers(
    supernet: Any,
    task: Task,
    sample: Mapping[str, Any],
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train the quantizer parameters that `sample` runs, in place in `supernet` (everything
    else frozen), for `steps` steps of `task.batches(batch_size, seed)` with Adam at `lr`.

    Returns the loss history ([] when none of the sample's schemes learns anything).
    """
    schemes = {QuantScheme.parse(str(sample[lab])) for lab in supernet.quant_paths}
    if steps == 0 or not any(learns(s) for s in schemes):
        return []
    learned = {id(p) for p in quantizer_parameters(supernet)}
    rest = [p for p in supernet.parameters() if id(p) not in learned]
    with frozen(rest), supernet.activate(dict(sample)):
        return finetune(
            supernet,
            task,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            grad_clip=None,
            progress=progress,
        )


def calibrate_strategies(
    supernet: Any,
    task: Task,
    base: Sample,
    labels: Iterable[str],
    **kwargs: Any,
) -> dict[str, float]:
    """Calibrate every option of the quant `labels` on its own: `base` with each label that
    offers the option set to it (the others keep base's). kwargs go to
    `calibrate_quantizers`. Returns option → its last calibration loss (NaN: nothing to
    learn). Options whose method shares parameters across bit-widths (a layer's LSQ step
    multiplier serves w4a8:lsq and w8a8:lsq) are calibrated in option order, so the last of
    them sets what they share: strategies of one bit-width (DQSS' setting) never share."""
    labels = list(labels)
    space = supernet.space
    options = dict.fromkeys(str(o) for lab in labels for o in space[lab].options)
    out: dict[str, float] = {}
    for option in options:
        sample = dict(base)
        for lab in labels:
            by_name = {str(o): o for o in space[lab].options}
            if option in by_name:
                sample[lab] = by_name[option]
        history = calibrate_quantizers(supernet, task, sample, **kwargs)
        out[option] = history[-1]["loss"] if history else float("nan")
        if history:
            log.info("calibrated %s: loss %.4g", option, out[option])
        else:
            log.info("%s has no learned quantizer parameters: nothing to calibrate", option)
    return out
