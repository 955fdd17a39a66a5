"""A cost budget as middleware: a strategy that only asks architectures within budgets.

The filter pattern of NNI's multi-trial strategies (a latency budget is a
filter, not a strategy): ``ask`` draws from the wrapped strategy until the
sample satisfies every budget, ``cost_b(x) ≤ B_b``; each rejected sample is told
back to the wrapped strategy as infeasible (`Strategy.tell_infeasible`, with the
relative overshoot ``cost_b(x) / B_b − 1`` per violated budget), so strategies
that model constraints (NSGA-II's constrained domination, TPE's constrained
split) learn where the budget lies. A cost that is NaN (unknown, e.g. a missing
latency entry with a non-strict cost model) counts as over budget.

Before the first ask, `check_feasible` costs ``space.min()`` and `n_probe`
random samples in one vectorized call and refuses budgets no architecture can
meet; `max_tries` rejections in a row raise instead of looping for ever.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import ConfigError, InfeasibleBudgetError
from nas.spec import Sample
from nas.strategies.base import Strategy, Values

log = logging.getLogger(__name__)

CostFn = Callable[[Sequence[Mapping[str, Any]]], Mapping[str, np.ndarray]]


def _overshoot(costs: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Violated budgets → relative overshoot ``cost / budget − 1`` (> 0); NaN cost → inf."""
    out = {}
    for k, limit in budgets.items():
        c = costs[k]
        if math.isnan(c):
            out[k] = math.inf
        elif c > limit:
            out[k] = c / limit - 1.0 if limit > 0 else c - limit
    return out


class BudgetFilter(Strategy):
    """Wraps `strategy`; asks only samples with ``cost_fn([s])[name] ≤ budgets[name]`` for all.

    cost_fn: samples → {cost name: array (N,)}, like `CostModel.costs`.
    """

    def __init__(
        self,
        strategy: Strategy,
        cost_fn: CostFn,
        budgets: Mapping[str, float],
        max_tries: int = 1000,
        n_probe: int = 2048,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise ConfigError(f"BudgetFilter wraps a Strategy, got {type(strategy).__name__}")
        super().__init__(strategy.space, strategy.objectives, strategy.seed)
        if not budgets:
            raise ConfigError("BudgetFilter needs at least one budget (cost name → upper bound)")
        self.budgets: dict[str, float] = {}
        for k, v in budgets.items():
            try:
                b = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"budget {k!r} must be a number, got {v!r}") from None
            if math.isnan(b):
                raise ConfigError(f"budget {k!r} is NaN; give an upper bound")
            self.budgets[str(k)] = b
        if max_tries < 1 or n_probe < 0:
            raise ConfigError(f"max_tries must be ≥ 1 and n_probe ≥ 0, got {max_tries}, {n_probe}")
        self.inner = strategy
        self.cost_fn = cost_fn
        self.max_tries = int(max_tries)
        self.n_probe = int(n_probe)
        self.n_rejected = 0
        self.feasible: dict[str, float] | None = None  # smallest reachable cost per budget
        self.acceptance: float | None = None  # share of probes within all budgets

    # -- costs ----------------------------------------------------------------------------------
    def _costs(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        raw = self.cost_fn(samples)
        missing = [k for k in self.budgets if k not in raw]
        if missing:
            raise ConfigError(
                f"budget(s) {missing} name no cost that cost_fn gives; it gives {sorted(raw)}"
            )
        return {k: np.asarray(raw[k], dtype=np.float64).reshape(-1) for k in self.budgets}

    def check_feasible(self) -> dict[str, float]:
        """Smallest cost per budget over ``space.min()`` and `n_probe` random samples.

        Raises `InfeasibleBudgetError` when even that exceeds a budget.
        """
        rng = np.random.default_rng([self.seed, 0xB0D6E7])  # own stream: asks stay unchanged
        probes = [self.space.min(), *self.space.sample_many(self.n_probe, rng=rng)]
        costs = self._costs(probes)
        best: dict[str, float] = {}
        ok = np.ones(len(probes), dtype=bool)
        for name, limit in self.budgets.items():
            c = costs[name]  # (1 + n_probe,)
            if np.isnan(c).all():
                raise InfeasibleBudgetError(
                    f"budget {name}: the cost model gives NaN for every probed architecture "
                    "(missing latency entries?); measure the table (nas latency build) or use a "
                    "strict cost model to see which keys are missing"
                )
            best[name] = float(np.nanmin(c))
            if best[name] > limit:
                raise InfeasibleBudgetError(
                    f"budget {name} ≤ {limit:g} cannot be met: the cheapest of space.min() and "
                    f"{self.n_probe} random architectures of space {self.space.name!r} has "
                    f"{name} = {best[name]:.6g}. Raise the budget to at least {best[name]:.6g}, "
                    "or search a space with smaller options"
                )
            ok &= c <= limit
        self.feasible = best
        self.acceptance = float(ok.mean())
        if not ok.any():
            log.warning(
                "budgets %s: no probed architecture meets all budgets at once (each is reachable "
                "alone); asks may raise after %d rejections",
                self.budgets,
                self.max_tries,
            )
        else:
            log.info(
                "budgets %s: %.1f%% of %d random architectures are within",
                self.budgets,
                100 * self.acceptance,
                len(probes),
            )
        return best

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self) -> Sample:
        if self.feasible is None:
            self.check_feasible()
        closest: tuple[float, dict[str, float]] | None = None
        for _ in range(self.max_tries):
            s = self.inner.ask()
            c = {k: float(v[0]) for k, v in self._costs([s]).items()}
            over = _overshoot(c, self.budgets)
            if not over:
                self.n_asked += 1
                return s
            self.n_rejected += 1
            self.inner.tell_infeasible(s, over, known=c)
            worst = max(over.values())
            if closest is None or worst < closest[0]:
                closest = (worst, c)
        assert closest is not None
        rate = "unknown" if self.acceptance is None else f"{100 * self.acceptance:.2f}%"
        raise InfeasibleBudgetError(
            f"{type(self.inner).__name__} proposed {self.max_tries} architectures in a row over "
            f"the budgets {self.budgets}; the closest had costs {closest[1]} "
            f"(random acceptance rate {rate}). Raise the budgets, pass a larger max_tries, or "
            "use a strategy that learns from rejections (nsga2, tpe)"
        )

    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        self.n_told += 1
        self.inner.tell(sample, metrics)

    def tell_infeasible(
        self, sample: Mapping[str, Any], violation: Values, known: Values | None = None
    ) -> None:
        self.n_told += 1
        self.inner.tell_infeasible(sample, violation, known)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "budgets": dict(self.budgets),
            "n_rejected": self.n_rejected,
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if dict(state["budgets"]) != self.budgets:
            log.warning(
                "restoring a budget filter saved with budgets %s under budgets %s",
                state["budgets"],
                self.budgets,
            )
        self.n_rejected = int(state["n_rejected"])
        self.inner.load_state_dict(state["inner"])

    def __repr__(self) -> str:
        return f"BudgetFilter({self.inner!r}, budgets={self.budgets})"

    @property
    def stats(self) -> dict[str, Any]:
        """Asked, rejected and the acceptance rate seen by `check_feasible`."""
        return {"asked": self.n_asked, "rejected": self.n_rejected, "acceptance": self.acceptance}
