"""One-shot differentiable search: loss = task + λ · latency penalty, one backward per step.

The architecture parameters of a `nas.policies.DifferentiablePolicy` (DQSS scheme logits,
Li, Yan & Chen, arXiv:2404.08010; PaS width masks, Li et al., IJCAI 2022; depth
categoricals) and the supernet weights are updated in the SAME forward/backward pass (two
optimizers, one backward — DQSS' single-pass QAT), with the latency term of FBNet /
ProxylessNAS computed from the latency table's differentiable expectation
E[T] = `CostModel.expected(policy.probabilities(), default=policy.base)`:

    L = L_task + λ_t · P(E[T] / T_target)

    penalty "hinge" (default): P(r) = max(0, r − 1)   — no pull once under budget;
    penalty "log":             P(r) = |log r|         — two-sided: also pulls a model that is
                                                        faster than needed back up.

λ schedule: "constant" λ_t = λ; "linear" λ_t = λ · min(1, (t − w + 1) / (steps − w)) ramping
after the warm-up w; "auto" dual ascent on the constraint E[T] ≤ T_target,
λ_{t+1} = max(0, λ_t + η_λ · (E[T]/T_target − 1)); or any callable step → λ.

Temperature annealing (``temperature_end``): the softmax temperatures T of the quant and
depth categoricals go geometrically from the policy's own T_0 to T_end over the steps after
warm-up, T_t = T_0 · (T_end / T_0)^{min(1, (t − w) / (steps − w − 1))}. The latency term sees
the probabilities, the returned architecture is their argmax; without annealing a short
search ends with flat probabilities whose E[T] can be far from the argmax's latency (the
discretization gap of DARTS-style relaxations; FBNet anneals its Gumbel-softmax temperature
the same way). PaS widths need none: their forward masks are already binary.
``arch_lr_schedule="cosine"`` decays the architecture learning rate as
lr_arch · ½(1 + cos(π (t − w) / (steps − w))), so that Adam's constant-size steps stop
oscillating E[T] around the target at the end.

Discretization: ``discretize="argmax"`` (default) returns the argmax of every categorical
(snapped widths). A short search can end with categoricals that are still nearly flat (a
depth label at 0.54 / 0.46), whose argmax lies far from E[T]. ``discretize="sampled"``
follows FBNet (Wu et al., CVPR 2019, which samples its final architectures from the learned
distribution P_θ): it draws `n_candidates` architectures from the final per-label
probabilities, adds the argmax, keeps those whose predicted cost (``cost_model.predict``)
is within ±`tolerance` of the target, and returns the most probable of them,
argmax_a Σ_L log p_L(a_L); the closest to the target when none is. ``discretize="scored"``
ranks the same candidates within tolerance by probability and returns, of the `n_scored`
most probable, the one whose weight-shared sub-network has the lowest validation loss on
the supernet (the derivation step of SPOS, Guo et al., ECCV 2020, restricted to the learned
distribution): a briefly searched distribution is nearly flat, so its probabilities alone
hardly tell its draws apart, while the supernet can.

Warm-up (DQSS' remedy for under-fitting): for the first `warmup_steps` the architecture
parameters are frozen (no gradient, no optimizer step) and only the weights train under
the initial mixture. Mode "ptq": the weights are frozen and only the architecture
parameters and the learned quantizer parameters (``wq_*`` / ``aq_*``) train, on the task's
data used as calibration data; by default only the quant labels are searched then. With
``calibrate_steps`` > 0 (ptq only) every candidate strategy is first calibrated on its own
(`nas.training.calibrate.calibrate_strategies`, `calibrate_steps` steps at lr_w), and the
search then learns the strategy logits alone: it assigns, per layer, quantizers that are
each already calibrated, instead of fresh ones that learn from p_k of the gradient.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nas.errors import ConfigError, MqnasError
from nas.policies import DifferentiablePolicy, quantizer_parameters
from nas.spec import Sample
from nas.training.calibrate import calibrate_strategies

log = logging.getLogger(__name__)

PENALTIES = ("hinge", "log")
DISCRETIZE = ("argmax", "sampled", "scored")
SCHEDULES = ("constant", "linear", "auto")
ARCH_LR_SCHEDULES = ("constant", "cosine")
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
    argmax_sample: Sample | None = None  # the plain argmax (== sample for "argmax")
    argmax_latency_ms: float = math.nan


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
    anything with ``expected(probs[, default]) -> Tensor`` (ms; ``default`` = the sample that
    unsearched labels take, passed as the policy's base when accepted) and optionally
    ``predict(samples)`` (a `latency_tables.cost.CostModel` with a table). search: label
    kinds to search (default: all for "joint", ("quant",) for "ptq"). policy_kwargs go to
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
        temperature_end: float | None = None,
        arch_lr_schedule: str = "constant",
        discretize: str = "argmax",
        n_candidates: int = 512,
        n_scored: int = 16,
        tolerance: float = 0.03,
        batch_size: int = 8,
        mode: str = "joint",
        calibrate_steps: int = 0,
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
        if temperature_end is not None and not temperature_end > 0:
            raise ConfigError(f"temperature_end must be > 0 (or None), got {temperature_end}")
        if arch_lr_schedule not in ARCH_LR_SCHEDULES:
            raise ConfigError(
                f"arch_lr_schedule {arch_lr_schedule!r} is unknown; use one of "
                f"{list(ARCH_LR_SCHEDULES)}"
            )
        if discretize not in DISCRETIZE:
            raise ConfigError(
                f"discretize {discretize!r} is unknown; use one of {list(DISCRETIZE)}"
            )
        if discretize != "argmax" and not hasattr(cost_model, "predict"):
            raise ConfigError(
                f"discretize={discretize!r} needs a cost model with predict(samples); pass a "
                'CostModel with a latency table or use discretize="argmax"'
            )
        if n_candidates < 1 or n_scored < 1 or not tolerance >= 0:
            raise ConfigError(
                "need n_candidates >= 1, n_scored >= 1 and tolerance >= 0, got "
                f"{n_candidates}, {n_scored}, {tolerance}"
            )
        if calibrate_steps < 0 or (calibrate_steps and mode != "ptq"):
            raise ConfigError(
                f"calibrate_steps must be >= 0 and needs mode='ptq' (weights frozen), got "
                f"{calibrate_steps} with mode={mode!r}"
            )
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
        self.temperature_end = None if temperature_end is None else float(temperature_end)
        self.arch_lr_schedule = arch_lr_schedule
        self.discretize = discretize
        self.n_candidates = int(n_candidates)
        self.n_scored = int(n_scored)
        self.tolerance = float(tolerance)
        self.batch_size = int(batch_size)
        self.mode = mode
        self.calibrate_steps = int(calibrate_steps)
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
        # Labels the policy does not search sit at its base sample, which need not be the
        # space's default (e.g. a quant-only search of one fixed structure): the cost model
        # must read them there, or E[T] is the latency of another architecture.
        try:
            params = inspect.signature(cost_model.expected).parameters
        except (TypeError, ValueError):
            params = {}
        self._pass_default = "default" in params
        # the categoricals whose temperature anneals, with their initial T_0
        self._tempered = [
            (part, float(part.temperature))
            for part in (self.policy.quant, self.policy.depth)
            if part is not None
        ]

    def expected_cost(self) -> Tensor:
        """E[T] under the policy's probabilities, unsearched labels at the policy's base."""
        probs = self.policy.probabilities()
        if self._pass_default:
            return self.cost_model.expected(probs, default=self.policy.base)
        return self.cost_model.expected(probs)

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

    def anneal_progress(self, step: int) -> float | None:
        """(t − w) / (steps − w − 1) clamped to [0, 1]; None without annealing."""
        if self.temperature_end is None or not self._tempered:
            return None
        span = max(1, self.steps - self.warmup_steps - 1)
        return min(1.0, max(0.0, (step - self.warmup_steps) / span))

    def lr_arch_at(self, step: int) -> float:
        """The architecture learning rate of `step` (see ``arch_lr_schedule``)."""
        if self.arch_lr_schedule == "constant":
            return self.lr_arch
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr_arch * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def _anneal(self, step: int) -> float:
        """Set every tempered categorical to T_0 · (T_end / T_0)^progress; the first one's T."""
        progress = self.anneal_progress(step)
        if progress is None:
            return math.nan
        for part, t0 in self._tempered:
            part.temperature = t0 * (self.temperature_end / t0) ** progress
        return float(self._tempered[0][0].temperature)

    # -- parameters -------------------------------------------------------------------------
    def _weight_params(self) -> list[nn.Parameter]:
        if self.mode == "ptq":  # calibrated beforehand: the search learns the logits alone
            return [] if self.calibrate_steps else quantizer_parameters(self.supernet)
        return [p for p in self.supernet.weight_parameters()]

    # -- run --------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> OneShotResult:
        net, policy = self.supernet, self.policy
        if self.calibrate_steps and policy.quant is not None:
            calibrate_strategies(
                net,
                self.task,
                policy.base,
                policy.quant.labels,
                steps=self.calibrate_steps,
                batch_size=self.batch_size,
                lr=self.lr_w,
                seed=self.seed,
                progress=progress,
            )
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
                final_e = float(self.expected_cost())
                final_probs = {k: v.detach() for k, v in policy.probabilities().items()}
            argmax = policy.discretize()
            summary = policy.summary()
        finally:
            policy.detach()
            policy.requires_grad_(True)
            for p in net.parameters():
                p.requires_grad_(flags[id(p)])
        sample, predicted, argmax_ms = argmax, math.nan, math.nan
        if hasattr(self.cost_model, "predict"):
            predicted = argmax_ms = float(self.cost_model.predict([argmax])[0])
        if self.discretize != "argmax":
            sample, predicted = self._sampled(argmax, final_probs)
        log.info(
            "one-shot search: E[T]=%.4g ms, argmax %.4g ms, returned sample %.4g ms (target %.4g)",
            final_e,
            argmax_ms,
            predicted,
            self.target_ms,
        )
        return OneShotResult(sample, history, final_e, predicted, summary, argmax, argmax_ms)

    @torch.no_grad()
    def _sampled(self, argmax: Sample, probs: Mapping[str, Tensor]) -> tuple[Sample, float]:
        """FBNet-style discretization (see the module docstring): the most probable of
        `n_candidates` draws (and the argmax) within ±tolerance of the target."""
        space = self.policy.space
        g = torch.Generator().manual_seed(self.seed + 2)
        labels = list(probs)
        p = [probs[lab].double().cpu().clamp_min(0) for lab in labels]
        n = self.n_candidates
        draws = torch.stack(  # (labels, n) option indices
            [torch.multinomial(q / q.sum(), n, replacement=True, generator=g) for q in p]
        )
        argmax_idx = torch.tensor([space[lab].options.index(argmax[lab]) for lab in labels])
        draws = torch.cat([argmax_idx[:, None], draws], 1)  # candidate 0 is the argmax
        logp = torch.stack([q.clamp_min(1e-30).log()[d] for q, d in zip(p, draws)]).sum(0)
        cands = [
            space.canonical(
                dict(argmax, **{lab: space[lab].options[int(i)] for lab, i in zip(labels, col)})
            )
            for col in draws.T.tolist()
        ]
        cost = np.asarray(self.cost_model.predict(cands), dtype=float)  # (n + 1,)
        err = np.abs(cost / self.target_ms - 1.0)
        ok = err <= self.tolerance
        if ok.any():
            i = int(np.argmax(np.where(ok, logp.numpy(), -np.inf)))
            if self.discretize == "scored":
                i = self._best_scored(cands, np.where(ok, logp.numpy(), -np.inf))
        else:
            i = int(np.argmin(err))
        log.info(
            "sampled discretization: %d of %d candidates within ±%.0f%% of the target; "
            "chose #%d (%.4g, log p %.4g)",
            int(ok.sum()),
            len(cands),
            100 * self.tolerance,
            i,
            float(cost[i]),
            float(logp[i]),
        )
        return cands[i], float(cost[i])

    def _best_scored(self, cands: list[Sample], logp: np.ndarray) -> int:
        """Index of the lowest supernet validation loss among the `n_scored` most probable
        candidates (-inf log p: outside the tolerance)."""
        order = [int(j) for j in np.argsort(-logp)[: self.n_scored] if np.isfinite(logp[j])]
        losses = []
        for j in order:
            with self.supernet.activate(cands[j]):
                losses.append(float(self.task.validate(self.supernet)["val_loss"]))
        best = order[int(np.argmin(losses))]
        log.info(
            "scored discretization: supernet val loss %.5g (most probable: %.5g) over %d",
            min(losses),
            losses[0],
            len(order),
        )
        return best

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
        temperature = self._anneal(step)
        batch = next(batches)
        with net.activate(policy.sample_structure(g_path)):
            task_loss = self.task.loss(net, batch, g_noise)
        lam = self.lam_at(step)
        with torch.set_grad_enabled(not frozen):
            expected = self.expected_cost()
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
            for group in opt_a.param_groups:
                group["lr"] = self.lr_arch_at(step)
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
            "temperature": temperature,
        }
