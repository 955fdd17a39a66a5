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

Cost models: the search consumes the `OneShotCostModel` protocol, ``expected(probs,
default=...) -> Tensor``, and `PredictingCostModel`'s ``predict(samples)`` when it has one
(needed by "sampled" and "scored"); `latency_tables.cost.CostModel` is both. A cost model
whose ``expected`` takes no ``default`` is adapted by its caller, e.g. by a wrapper that
accepts it and prices the unsearched labels at that sample.

Data parallelism (``parallel``, `nas.training.distributed.search_parallel`): each rank
noises the global batch with the shared generator, keeps its rows, and averages the
gradients of the weights and of the architecture parameters — logits are parameters like
any other — before the optimizer steps; E[T], λ and the structure samples depend on
replicated state only, so every rank steps alike. The task's noising is used directly
then (`nas.training.objective`), as in the sandwich trainer.

Settings and registry: `OneShotSettings` (`nas.strategies.oneshot_settings`, torch-free so
that the config converts into it) holds every hyperparameter above. `ONESHOT` registers
the one-shot searches by name beside the ask/tell `STRATEGIES`; ``"differentiable"`` is
`search`, this module's `OneShotSearch` run once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nas.errors import ConfigError, MqnasError
from nas.policies import DifferentiablePolicy, quantizer_parameters
from nas.registry import Registry
from nas.spec import Sample
from nas.strategies.oneshot_settings import PENALTIES, OneShotSettings
from nas.tasks.base import denoise
from nas.training.calibrate import calibrate_strategies
from nas.training.objective import noising_of, noisy_batch, task_mse

if TYPE_CHECKING:  # torch.distributed is loaded only by data-parallel runs
    from nas.training.distributed import DataParallel

log = logging.getLogger(__name__)

# Adam (DARTS' and DQSS' choice) normalises the gradient scale per parameter, so λ acts only
# through the balance of task and latency gradients; SGD steps scale with λ itself.
_ARCH_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


@runtime_checkable
class OneShotCostModel(Protocol):
    """What the search reads from a cost model: E[T] (ms) as a differentiable tensor.

    probs: label → probability vector over its options (the searched labels); default:
    the sample whose values the other labels take (the search passes the policy's base).
    """

    def expected(
        self, probs: Mapping[str, Tensor], default: Mapping[str, Any] | None = None
    ) -> Tensor: ...


@runtime_checkable
class PredictingCostModel(OneShotCostModel, Protocol):
    """A cost model that also prices discrete samples (ms, one per sample): what the
    search reports for its result, and what "sampled" / "scored" discretization ranks."""

    def predict(self, samples: Sequence[Sample]) -> np.ndarray: ...


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

    def trace(self) -> dict[str, Any]:
        """What a run keeps of the search (its ``oneshot.json``): the sample, E[T] and the
        sample's latency, the final probabilities and the per-step history."""
        return {
            "sample": self.sample,
            "expected_latency_ms": self.expected_latency_ms,
            "sample_latency_ms": self.sample_latency_ms,
            "probabilities": self.probabilities,
            "history": self.history,
        }


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

    supernet: a `Supernet` of a registered space; task: a `nas.tasks.Task`; cost_model: a
    `OneShotCostModel` (a `PredictingCostModel` for ``discretize`` other than "argmax");
    settings: every hyperparameter, validated (`OneShotSettings`); device: where the
    supernet moves first (None: it stays where it is); parallel: this process's rank of a
    data-parallel search (module docstring; `settings.batch_size` is the global batch).
    """

    def __init__(
        self,
        supernet: Any,
        task: Any,
        cost_model: OneShotCostModel,
        settings: OneShotSettings,
        *,
        device: str | torch.device | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        if not isinstance(settings, OneShotSettings):
            raise TypeError(
                "OneShotSearch takes its hyperparameters as one OneShotSettings, e.g. "
                f"OneShotSettings(target_ms=5.0, steps=100); got {type(settings).__name__}"
            )
        if not isinstance(cost_model, OneShotCostModel):
            raise ConfigError(
                f"cost model {type(cost_model).__name__} has no expected(probs, default=...); "
                "pass a latency_tables.cost.CostModel with a latency table (see "
                "OneShotCostModel)"
            )
        if settings.discretize != "argmax" and not isinstance(cost_model, PredictingCostModel):
            raise ConfigError(
                f"discretize={settings.discretize!r} needs a cost model with predict(samples); "
                'pass a CostModel with a latency table or use discretize="argmax"'
            )
        self.supernet = supernet
        self.task = task
        self.cost_model = cost_model
        self.settings = settings
        self.parallel = parallel
        if parallel is not None:
            parallel.check_batch(settings.batch_size)
            self.noising = noising_of(task)  # the global batch is noised before the split
        if device is not None:
            supernet.to(device)
        self.device = next(supernet.parameters()).device
        self.policy = DifferentiablePolicy(
            supernet, search=settings.kinds, **dict(settings.policy_kwargs)
        )
        self._lam_now = settings.lam
        # the categoricals whose temperature anneals, with their initial T_0
        self._tempered = [
            (part, float(part.temperature))
            for part in (self.policy.quant, self.policy.depth)
            if part is not None
        ]

    @property
    def target_ms(self) -> float:
        """The latency target (ms) of the settings."""
        return self.settings.target_ms

    def expected_cost(self) -> Tensor:
        """E[T] under the policy's probabilities, unsearched labels at the policy's base."""
        # Labels the policy does not search sit at its base sample, which need not be the
        # space's default (e.g. a quant-only search of one fixed structure): the cost model
        # must read them there, or E[T] is the latency of another architecture.
        return self.cost_model.expected(self.policy.probabilities(), default=self.policy.base)

    # -- schedule ---------------------------------------------------------------------------
    def lam_at(self, step: int) -> float:
        """λ_t of the schedule (the current dual variable for "auto")."""
        s = self.settings
        if callable(s.lam_schedule):
            return float(s.lam_schedule(step))
        if s.lam_schedule == "linear":
            span = max(1, s.steps - s.warmup_steps)
            return s.lam * min(1.0, max(0.0, (step - s.warmup_steps + 1) / span))
        if s.lam_schedule == "auto":
            return self._lam_now
        return s.lam

    def anneal_progress(self, step: int) -> float | None:
        """(t − w) / (steps − w − 1) clamped to [0, 1]; None without annealing."""
        s = self.settings
        if s.temperature_end is None or not self._tempered:
            return None
        span = max(1, s.steps - s.warmup_steps - 1)
        return min(1.0, max(0.0, (step - s.warmup_steps) / span))

    def lr_arch_at(self, step: int) -> float:
        """The architecture learning rate of `step` (see ``arch_lr_schedule``)."""
        s = self.settings
        if s.arch_lr_schedule == "constant":
            return s.lr_arch
        progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return s.lr_arch * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def _anneal(self, step: int) -> float:
        """Set every tempered categorical to T_0 · (T_end / T_0)^progress; the first one's T."""
        progress = self.anneal_progress(step)
        if progress is None:
            return math.nan
        for part, t0 in self._tempered:
            part.temperature = t0 * (self.settings.temperature_end / t0) ** progress
        return float(self._tempered[0][0].temperature)

    # -- parameters -------------------------------------------------------------------------
    def _weight_params(self) -> list[nn.Parameter]:
        if self.settings.mode == "ptq":  # calibrated first: the search learns the logits alone
            return [] if self.settings.calibrate_steps else quantizer_parameters(self.supernet)
        return [p for p in self.supernet.weight_parameters()]

    # -- run --------------------------------------------------------------------------------
    def run(
        self,
        progress: bool = True,
        on_step: Callable[[dict[str, float]], None] | None = None,
    ) -> OneShotResult:
        """Search; `on_step` sees each step's history entry (progress reporting)."""
        net, policy, s = self.supernet, self.policy, self.settings
        if s.calibrate_steps and policy.quant is not None:
            calibrate_strategies(
                net,
                self.task,
                policy.base,
                policy.quant.labels,
                steps=s.calibrate_steps,
                batch_size=s.batch_size,
                lr=s.lr_w,
                seed=s.seed,
                progress=progress,
            )
        trainable = self._weight_params()
        flags = {id(p): p.requires_grad for p in net.parameters()}
        if s.mode == "ptq":
            keep = {id(p) for p in trainable}
            for p in net.parameters():
                p.requires_grad_(id(p) in keep)
        opt_w = torch.optim.Adam(trainable, lr=s.lr_w) if trainable else None
        opt_a = _ARCH_OPTIMIZERS[s.arch_optimizer](policy.arch_parameters(), lr=s.lr_arch)
        # what a data-parallel step averages: both optimizers' parameters, each once
        self._reduced = list({id(p): p for p in [*trainable, *policy.arch_parameters()]}.values())
        batches = self.task.batches(s.batch_size, s.seed, self.device)
        g_path = torch.Generator().manual_seed(s.seed)  # depth samples (CPU, tiny)
        g_noise = torch.Generator(device=self.device).manual_seed(s.seed + 1)
        history: list[dict[str, float]] = []
        self._lam_now = s.lam
        net.train()
        policy.attach()
        try:
            bar = tqdm(range(s.steps), desc="one-shot search", disable=not progress)
            for step in bar:
                history.append(self._step(step, batches, g_path, g_noise, opt_w, opt_a))
                h = history[-1]
                if on_step is not None:
                    on_step(h)
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
        if isinstance(self.cost_model, PredictingCostModel):
            predicted = argmax_ms = float(self.cost_model.predict([argmax])[0])
        if s.discretize != "argmax":
            sample, predicted = self._sampled(argmax, final_probs)
        log.info(
            "one-shot search: E[T]=%.4g ms, argmax %.4g ms, returned sample %.4g ms (target %.4g)",
            final_e,
            argmax_ms,
            predicted,
            s.target_ms,
        )
        return OneShotResult(sample, history, final_e, predicted, summary, argmax, argmax_ms)

    @torch.no_grad()
    def _sampled(self, argmax: Sample, probs: Mapping[str, Tensor]) -> tuple[Sample, float]:
        """FBNet-style discretization (see the module docstring): the most probable of
        `n_candidates` draws (and the argmax) within ±tolerance of the target."""
        space, s = self.policy.space, self.settings
        g = torch.Generator().manual_seed(s.seed + 2)
        labels = list(probs)
        p = [probs[lab].double().cpu().clamp_min(0) for lab in labels]
        n = s.n_candidates
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
        err = np.abs(cost / s.target_ms - 1.0)
        ok = err <= s.tolerance
        if ok.any():
            i = int(np.argmax(np.where(ok, logp.numpy(), -np.inf)))
            if s.discretize == "scored":
                i = self._best_scored(cands, np.where(ok, logp.numpy(), -np.inf))
        else:
            i = int(np.argmin(err))
        log.info(
            "sampled discretization: %d of %d candidates within ±%.0f%% of the target; "
            "chose #%d (%.4g, log p %.4g)",
            int(ok.sum()),
            len(cands),
            100 * s.tolerance,
            i,
            float(cost[i]),
            float(logp[i]),
        )
        return cands[i], float(cost[i])

    def _best_scored(self, cands: list[Sample], logp: np.ndarray) -> int:
        """Index of the lowest supernet validation loss among the `n_scored` most probable
        candidates (-inf log p: outside the tolerance)."""
        top = np.argsort(-logp)[: self.settings.n_scored]
        order = [int(j) for j in top if np.isfinite(logp[j])]
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

    def _task_loss(self, batch: Mapping[str, Tensor], g_noise: torch.Generator) -> Tensor:
        """The task loss of the active structure: on the whole batch, or on this rank's
        rows of it noised whole (so a row's noise is the one a single process draws)."""
        if self.parallel is None:
            return self.task.loss(self.supernet, batch, g_noise)
        nb = self.parallel.shard(noisy_batch(self.noising, dict(batch), g_noise))
        out = denoise(self.supernet, nb.x_t, nb.t, nb.context)  # (B / W, C or 2C, H, W)
        return task_mse(self.noising, out, nb.target)

    def _step(
        self,
        step: int,
        batches: Any,
        g_path: torch.Generator,
        g_noise: torch.Generator,
        opt_w: torch.optim.Optimizer | None,
        opt_a: torch.optim.Optimizer,
    ) -> dict[str, float]:
        net, policy, s = self.supernet, self.policy, self.settings
        frozen = step < s.warmup_steps
        policy.requires_grad_(not frozen)
        temperature = self._anneal(step)
        batch = next(batches)
        with net.activate(policy.sample_structure(g_path)):
            task_loss = self._task_loss(batch, g_noise)
        lam = self.lam_at(step)
        with torch.set_grad_enabled(not frozen):
            expected = self.expected_cost()
            pen = latency_penalty(expected, s.target_ms, s.penalty)
        loss = task_loss if frozen else task_loss + lam * pen.to(task_loss.dtype)
        task_v, loss_v = float(task_loss.detach()), float(loss.detach())
        if self.parallel is not None:  # the global batch's: every rank decides alike below
            task_v, loss_v = self.parallel.mean([task_v, loss_v])
        if not math.isfinite(loss_v):
            raise SearchDivergedError(
                f"one-shot search step {step}: loss is {loss_v} (task {task_v}, E[T] "
                f"{float(expected.detach())} ms); lower lr_w / lr_arch or λ"
            )
        if opt_w is not None:
            opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        if self.parallel is not None:
            self.parallel.average(self._reduced)
        if opt_w is not None:
            opt_w.step()
        if not frozen:
            for group in opt_a.param_groups:
                group["lr"] = self.lr_arch_at(step)
            opt_a.step()
            policy.project()
        e_ms = float(expected.detach())
        if s.lam_schedule == "auto" and not frozen:
            self._lam_now = max(0.0, self._lam_now + s.lam_lr * (e_ms / s.target_ms - 1.0))
        return {
            "step": step,
            "task_loss": task_v,
            "expected_latency_ms": e_ms,
            "penalty": float(pen.detach()),
            "loss": loss_v,
            "lam": lam,
            "warmup": float(frozen),
            "temperature": temperature,
        }


#: The one-shot searches by name; each is called like `search` below and returns the found
#: architecture with the trace of its search.
ONESHOT: Registry[Callable[..., OneShotResult]] = Registry("one-shot search")


@ONESHOT.register("differentiable")
def search(
    supernet: Any,
    task: Any,
    cost_model: OneShotCostModel,
    settings: OneShotSettings,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> OneShotResult:
    """The differentiable search of this module (`OneShotSearch`), run once."""
    return OneShotSearch(supernet, task, cost_model, settings, device=device).run(progress)
