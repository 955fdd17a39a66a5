"""The hyperparameters of a one-shot search, validated once (no torch here).

`OneShotSettings` is what `nas.strategies.oneshot.OneShotSearch` takes whole, and what
`nas.config.OneShotConfig.settings` converts the ``search.oneshot`` section into: the
config imports this module, so it stays free of torch. The meaning of every field (λ
schedules, penalties, annealing, discretization, warm-up, PTQ mode) is documented with the
equations in `nas.strategies.oneshot`. The one check that needs the cost model
(``discretize`` other than ``"argmax"`` needs ``predict``) is made by the search itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.errors import ConfigError

PENALTIES = ("hinge", "log")
DISCRETIZE = ("argmax", "sampled", "scored")
SCHEDULES = ("constant", "linear", "auto")
ARCH_LR_SCHEDULES = ("constant", "cosine")
ARCH_OPTIMIZERS = ("adam", "sgd")
MODES = ("joint", "ptq")
#: the config's policy names (after their papers) → the label kinds the policy searches
POLICY_KINDS = {"dqss": "quant", "pas": "width", "depth": "depth"}


@dataclass(frozen=True)
class OneShotSettings:
    """Every hyperparameter of a one-shot search; the defaults are the search's own.

    target_ms: the latency target (ms). lam_schedule: one of `SCHEDULES` or a callable
    step → λ. search: label kinds to search (None: all for mode "joint", ("quant",) for
    "ptq"; see `kinds`). policy_kwargs go to `nas.policies.DifferentiablePolicy`
    (temperatures, mask_tau, mix_acts, base). arch_optimizer: "adam" or "sgd" for the
    architecture parameters (the weights always use Adam).
    """

    target_ms: float
    lam: float = 1.0
    lam_schedule: str | Callable[[int], float] = "constant"
    lam_lr: float = 0.1
    penalty: str = "hinge"
    steps: int = 100
    warmup_steps: int = 0
    lr_w: float = 1e-3
    lr_arch: float = 3e-2
    arch_optimizer: str = "adam"
    temperature_end: float | None = None
    arch_lr_schedule: str = "constant"
    discretize: str = "argmax"
    n_candidates: int = 512
    n_scored: int = 16
    tolerance: float = 0.03
    batch_size: int = 8
    mode: str = "joint"
    calibrate_steps: int = 0
    search: Iterable[str] | None = None
    policy_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self._check()
        # normalised after the checks, so that a wrong type fails with its rule's message;
        # a caller's list or dict is copied: the frozen settings must not change under it
        for name in ("target_ms", "lam", "lam_lr", "lr_w", "lr_arch", "tolerance"):
            object.__setattr__(self, name, float(getattr(self, name)))
        ints = ("steps", "warmup_steps", "n_candidates", "n_scored", "batch_size", "seed")
        for name in (*ints, "calibrate_steps"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.temperature_end is not None:
            object.__setattr__(self, "temperature_end", float(self.temperature_end))
        if self.search is not None:
            object.__setattr__(self, "search", tuple(self.search))
        object.__setattr__(self, "policy_kwargs", dict(self.policy_kwargs or {}))

    def _check(self) -> None:
        if not self.target_ms > 0:
            raise ConfigError(f"target_ms must be > 0 (a latency in ms), got {self.target_ms}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is unknown; use one of {list(MODES)}")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"penalty {self.penalty!r} is unknown; use one of {list(PENALTIES)}")
        if not callable(self.lam_schedule) and self.lam_schedule not in SCHEDULES:
            raise ConfigError(
                f"lam_schedule {self.lam_schedule!r} is unknown; use one of {list(SCHEDULES)} "
                "or a callable step -> λ"
            )
        if self.steps < 1 or not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(
                "need steps >= 1 and 0 <= warmup_steps <= steps, got "
                f"{self.steps}, {self.warmup_steps}"
            )
        if self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")
        if self.temperature_end is not None and not self.temperature_end > 0:
            raise ConfigError(f"temperature_end must be > 0 (or None), got {self.temperature_end}")
        if self.arch_lr_schedule not in ARCH_LR_SCHEDULES:
            raise ConfigError(
                f"arch_lr_schedule {self.arch_lr_schedule!r} is unknown; use one of "
                f"{list(ARCH_LR_SCHEDULES)}"
            )
        if self.discretize not in DISCRETIZE:
            raise ConfigError(
                f"discretize {self.discretize!r} is unknown; use one of {list(DISCRETIZE)}"
            )
        if self.n_candidates < 1 or self.n_scored < 1 or not self.tolerance >= 0:
            raise ConfigError(
                "need n_candidates >= 1, n_scored >= 1 and tolerance >= 0, got "
                f"{self.n_candidates}, {self.n_scored}, {self.tolerance}"
            )
        if self.calibrate_steps < 0 or (self.calibrate_steps and self.mode != "ptq"):
            raise ConfigError(
                f"calibrate_steps must be >= 0 and needs mode='ptq' (weights frozen), got "
                f"{self.calibrate_steps} with mode={self.mode!r}"
            )
        if self.arch_optimizer not in ARCH_OPTIMIZERS:
            raise ConfigError(
                f"arch_optimizer {self.arch_optimizer!r} is unknown; use one of "
                f"{list(ARCH_OPTIMIZERS)}"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The label kinds searched: `search`, or the mode's default when it is None."""
        if self.search is not None:
            return tuple(self.search)
        return ("quant",) if self.mode == "ptq" else ("quant", "width", "depth")
