"""One-shot differentiable search: loss = task + λ · latency penalty, one backward per step.

The architecture parameters of a `nas.policies.DifferentiablePolicy` (DQSS scheme logits,
Li, Yan & Chen, arXiv:2404.08010; PaS width masks, Li et al., IJCAI 2022; depth
categoricals) and the supernet weights are updated in the SAME forward/backward pass (two
optimizers, one backward — DQSS' single-pass QAT), with the latency term of FBNet /
ProxylessNAS computed from the latency table's differentiable expectation
E[T] = `CostModel.expected(policy.probabilities())`:

    L = L_task + λ_t · P(E[T] / T_target)

    penalty "hinge" (default): P(r) = max(0, r − 1)   — no pull once under budget;
    penalty "log":             P(r) = |log r|         — two-sided: also pulls a model that is
                                                        faster than needed back up.

λ schedule: "constant" λ_t = λ; "linear" λ_t = λ · min(1, (t − w + 1) / (steps − w)) ramping
after the warm-up w; "auto" dual ascent on the constraint E[T] ≤ T_target,
λ_{t+1} = max(0, λ_t + η_λ · (E[T]/T_target − 1)); or any callable step → λ.

Warm-up (DQSS' remedy for under-fitting): for the first `warmup_steps` the architecture
parameters are frozen (no gradient, no optimizer step) and only the weights train under
the initial mixture. Mode "ptq": the weights are frozen and only the architecture
parameters and the learned quantizer parameters (``wq_*`` / ``aq_*``) train, on the task's
data used as calibration data; by default only the quant labels are searched then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nas.errors import ConfigError, MqnasError
from nas.policies import DifferentiablePolicy, quantizer_parameters
from nas.spec import Sample

log = logging.getLogger(__name__)

PENALTIES = ("hinge", "log")
SCHEDULES = ("constant", "linear", "auto")
MODES = ("joint", "ptq")
# Adam (DARTS' and DQSS' choice) normalises the gradient scale per parameter, so λ acts only
# through the balance of task and latency gradients; SGD steps scale with λ itself.
ARCH_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


class SearchDivergedError(MqnasError):
    """The search loss became NaN or infinite."""


@dataclass(frozen=True)
class OneShotResult:
    """The discrete architecture and the trace of the search."""

    sample: Sample
    history: list[dict[str, float]] = field(default_factory=list)
    expected_latency_ms: float = math.nan  # E[T] under the final probabilities
    sample_latency_ms: float = math.nan  # the table's latency of `sample`
    probabilities: dict[str, list[float]] = field(default_factory=dict)


def latency_penalty(expected_ms: Tensor, target_ms: float, kind: str = "hinge") -> Tensor:
    """P(E[T] / T_target): ``hinge`` max(0, r − 1) or ``log`` |log r| (see module docstring)."""
    r = expected_ms / target_ms
    if kind == "hinge":
        return torch.clamp(r - 1.0, min=0.0)
    if kind == "log":
        return torch.log(r).abs()
    raise ConfigError(f"latency penalty {kind!r} is unknown; use one of {list(PENALTIES)}")


class OneShotSearch:
    """Differentiable one-shot search of a supernet under a latency target.

    supernet: a `Supernet` of a registered space; task: a `nas.tasks.Task`; cost_model:
    anything with ``expected(probs) -> Tensor`` (ms) and optionally ``predict(samples)``
    (a `latency_tables.cost.CostModel` with a table). search: label kinds to search
    (default: all for "joint", ("quant",) for "ptq"). policy_kwargs go to
    `DifferentiablePolicy` (temperatures, mask_tau, mix_acts, base). arch_optimizer: "adam"
    or "sgd" for the architecture parameters (weights always use Adam).
    """

    def __init__(
        self,
        supernet: Any,
        task: Any,
        cost_model: Any,
        target_ms: float,
        *,
        lam: float = 1.0,
        lam_schedule: str | Callable[[int], float] = "constant",
        lam_lr: float = 0.1,
        penalty: str = "hinge",
        steps: int = 100,
        warmup_steps: int = 0,
        lr_w: float = 1e-3,
        lr_arch: float = 3e-2,
        arch_optimizer: str = "adam",
        batch_size: int = 8,
        mode: str = "joint",
        search: Iterable[str] | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        if not target_ms > 0:
            raise ConfigError(f"target_ms must be > 0 (a latency in ms), got {target_ms}")
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is unknown; use one of {list(MODES)}")
        if penalty not in PENALTIES:
            raise ConfigError(f"penalty {penalty!r} is unknown; use one of {list(PENALTIES)}")
        if not callable(lam_schedule) and lam_schedule not in SCHEDULES:
            raise ConfigError(
                f"lam_schedule {lam_schedule!r} is unknown; use one of {list(SCHEDULES)} "
                "or a callable step -> λ"
            )
        if steps < 1 or not 0 <= warmup_steps <= steps:
            raise ConfigError(
                f"need steps >= 1 and 0 <= warmup_steps <= steps, got {steps}, {warmup_steps}"
            )
        if lam < 0:
            raise ConfigError(f"lam must be >= 0, got {lam}")
        if arch_optimizer not in ARCH_OPTIMIZERS:
            raise ConfigError(
                f"arch_optimizer {arch_optimizer!r} is unknown; use one of {list(ARCH_OPTIMIZERS)}"
            )
        self.supernet = supernet
        self.task = task
        self.cost_model = cost_model
        self.target_ms = float(target_ms)
        self.lam = float(lam)
        self.lam_schedule = lam_schedule
        self.lam_lr = float(lam_lr)
        self.penalty = penalty
        self.steps = int(steps)
        self.warmup_steps = int(warmup_steps)
        self.lr_w = float(lr_w)
        self.lr_arch = float(lr_arch)
        self.arch_optimizer = arch_optimizer
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        if device is not None:
            supernet.to(device)
        self.device = next(supernet.parameters()).device
        kinds = (
            tuple(search)
            if search is not None
            else (("quant",) if mode == "ptq" else ("quant", "width", "depth"))
        )
        self.policy = DifferentiablePolicy(supernet, search=kinds, **dict(policy_kwargs or {}))
        self._lam_now = self.lam

    # -- schedule ---------------------------------------------------------------------------
    def lam_at(self, step: int) -> float:
        """λ_t of the schedule (the current dual variable for "auto")."""
        if callable(self.lam_schedule):
            return float(self.lam_schedule(step))
        if self.lam_schedule == "linear":
            span = max(1, self.steps - self.warmup_steps)
            return self.lam * min(1.0, max(0.0, (step - self.warmup_steps + 1) / span))
        if self.lam_schedule == "auto":
            return self._lam_now
        return self.lam

    # -- parameters -------------------------------------------------------------------------
    def _weight_params(self) -> list[nn.Parameter]:
        if self.mode == "ptq":
            return quantizer_parameters(self.supernet)
        return [p for p in self.supernet.weight_parameters()]

    # -- run --------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> OneShotResult:
        net, policy = self.supernet, self.policy
        trainable = self._weight_params()
        flags = {id(p): p.requires_grad for p in net.parameters()}
        if self.mode == "ptq":
            keep = {id(p) for p in trainable}
            for p in net.parameters():
                p.requires_grad_(id(p) in keep)
        opt_w = torch.optim.Adam(trainable, lr=self.lr_w) if trainable else None
        opt_a = ARCH_OPTIMIZERS[self.arch_optimizer](policy.arch_parameters(), lr=self.lr_arch)
        batches = self.task.batches(self.batch_size, self.seed, self.device)
        g_path = torch.Generator().manual_seed(self.seed)  # depth samples (CPU, tiny)
        g_noise = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        history: list[dict[str, float]] = []
        self._lam_now = self.lam
        net.train()
        policy.attach()
        try:
            bar = tqdm(range(self.steps), desc="one-shot search", disable=not progress)
            for step in bar:
                history.append(self._step(step, batches, g_path, g_noise, opt_w, opt_a))
                h = history[-1]
                bar.set_postfix(
                    task=f"{h['task_loss']:.4f}", ms=f"{h['expected_latency_ms']:.3f}", lam=h["lam"]
                )
            with torch.no_grad():
                final_e = float(self.cost_model.expected(policy.probabilities()))
            sample = policy.discretize()
            summary = policy.summary()
        finally:
            policy.detach()
            policy.requires_grad_(True)
            for p in net.parameters():
                p.requires_grad_(flags[id(p)])
        predicted = math.nan
        if hasattr(self.cost_model, "predict"):
            predicted = float(self.cost_model.predict([sample])[0])
        log.info(
            "one-shot search: E[T]=%.4g ms, discrete sample %.4g ms (target %.4g ms)",
            final_e,
            predicted,
            self.target_ms,
        )
        return OneShotResult(sample, history, final_e, predicted, summary)

    def _step(
        self,
        step: int,
        batches: Any,
        g_path: torch.Generator,
        g_noise: torch.Generator,
        opt_w: torch.optim.Optimizer | None,
        opt_a: torch.optim.Optimizer,
    ) -> dict[str, float]:
        net, policy = self.supernet, self.policy
        frozen = step < self.warmup_steps
        policy.requires_grad_(not frozen)
        batch = next(batches)
        with net.activate(policy.sample_structure(g_path)):
            task_loss = self.task.loss(net, batch, g_noise)
        lam = self.lam_at(step)
        with torch.set_grad_enabled(not frozen):
            expected = self.cost_model.expected(policy.probabilities())
            pen = latency_penalty(expected, self.target_ms, self.penalty)
        loss = task_loss if frozen else task_loss + lam * pen.to(task_loss.dtype)
        if not torch.isfinite(loss.detach()):
            raise SearchDivergedError(
                f"one-shot search step {step}: loss is {float(loss.detach())} (task "
                f"{float(task_loss.detach())}, E[T] {float(expected.detach())} ms); lower "
                "lr_w / lr_arch or λ"
            )
        if opt_w is not None:
            opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        if opt_w is not None:
            opt_w.step()
        if not frozen:
            opt_a.step()
            policy.project()
        e_ms = float(expected.detach())
        if self.lam_schedule == "auto" and not frozen:
            self._lam_now = max(0.0, self._lam_now + self.lam_lr * (e_ms / self.target_ms - 1.0))
        return {
            "step": step,
            "task_loss": float(task_loss.detach()),
            "expected_latency_ms": e_ms,
            "penalty": float(pen.detach()),
            "loss": float(loss.detach()),
            "lam": lam,
            "warmup": float(frozen),
        }
