"""Sample-based search strategies: the ask/tell contract and the strategy registry.

A `Strategy` works over any `SearchSpace` (a registered family or
`SearchSpace.from_choices`): `ask()` returns a canonical sample, `tell(sample,
metrics)` reports its metrics (``None``: the trial failed; the strategy carries
on). Strategies are deterministic given their seed, and `state_dict()` is JSON
(including the random generator's state) so that a strategy rebuilt with the
same arguments and `load_state_dict(state)` asks exactly what the original
would have asked next — the Ray Tune adapter resumes searches this way.

Conventions for registered strategies (every one has a test class built on the
contract kit `nas.testing.strategies.StrategyTestCase`):

- the constructor is ``cls(space, objectives, seed=0, **options)``; every option
  has a default except the components the application injects (a weak-label
  function, a ranker), which the strategy's test class builds small in ``make()``;
- ``tell`` accepts samples it never asked (a warm start, a resumed run) and
  the key ``constraint`` in metrics (a float or a list; values ≤ 0 are feasible);
- ``tell_infeasible(sample, violation, known)`` reports a sample rejected before
  evaluation (a cost budget); by default it is a failed tell.
"""

from __future__ import annotations

import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.registry import Registry
from nas.space import SearchSpace
from nas.spec import Sample

DIRECTIONS = ("min", "max")
CONSTRAINT_KEY = "constraint"


@dataclass(frozen=True)
class Objective:
    """One objective of a search: a metric or cost name and whether to minimize or maximize."""

    name: str
    direction: str = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"an objective needs a non-empty metric name, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"objective {self.name!r}: direction {self.direction!r} is unknown; use 'min' "
                "or 'max'"
            )

    @property
    def sign(self) -> float:
        """+1 for min, -1 for max: ``sign * value`` is always minimized."""
        return 1.0 if self.direction == "min" else -1.0


#: metric or cost name → value (a tell's metrics, a budget violation)
Values = Mapping[str, float]

ObjectivesLike = Objective | str | Mapping[str, str] | Sequence[Objective | str | tuple[str, str]]


def as_objectives(objectives: ObjectivesLike) -> tuple[Objective, ...]:
    """Objectives from an `Objective`, a name (min), ``{name: "min"|"max"}`` or a list of these."""
    if isinstance(objectives, (Objective, str)):
        items: list[Any] = [objectives]
    elif isinstance(objectives, Mapping):
        items = list(objectives.items())
    else:
        items = list(objectives)
    out: list[Objective] = []
    for o in items:
        if isinstance(o, Objective):
            out.append(o)
        elif isinstance(o, str):
            out.append(Objective(o, "min"))
        elif isinstance(o, (tuple, list)) and len(o) == 2:
            out.append(Objective(str(o[0]), str(o[1])))
        else:
            raise ConfigError(
                f"cannot read objective {o!r}; give Objective(name, 'min'|'max'), a name, or "
                "a mapping name → 'min'|'max'"
            )
    if not out:
        raise ConfigError("a strategy needs at least one objective")
    names = [o.name for o in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"objectives {dup} are given more than once")
    return tuple(out)


def sample_key(sample: Mapping[str, Any]) -> str:
    """A hashable, order-sensitive key of a (validated) sample."""
    return json.dumps(list(sample.items()), separators=(",", ":"))


def constraint_values(metrics: Mapping[str, Any] | None) -> list[float]:
    """The ``constraint`` entry of told metrics as a list (empty when absent)."""
    if not metrics or CONSTRAINT_KEY not in metrics:
        return []
    c = metrics[CONSTRAINT_KEY]
    vals = list(c) if isinstance(c, (list, tuple, np.ndarray)) else [c]
    out = [float(v) for v in vals]
    if any(math.isnan(v) for v in out):
        raise ConfigError("metrics['constraint'] contains NaN; a constraint is a number, ≤ 0 = ok")
    return out


class Strategy(ABC):
    """An ask/tell search strategy over a `SearchSpace` (see the module doc)."""

    def __init__(self, space: SearchSpace, objectives: ObjectivesLike, seed: int = 0) -> None:
        if not isinstance(space, SearchSpace):
            raise ConfigError(
                f"a strategy searches a SearchSpace, got {type(space).__name__}; build one "
                "with get_space(name).space() or SearchSpace.from_choices({...})"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"strategy seed must be a non-negative int, got {seed!r}")
        self.space = space
        self.objectives: tuple[Objective, ...] = as_objectives(objectives)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.n_asked = 0
        self.n_told = 0

    # -- the contract ---------------------------------------------------------------------------
    @abstractmethod
    def ask(self) -> Sample:
        """The next sample to evaluate (canonical: `space.canonical` of it is itself)."""

    @abstractmethod
    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        """Report `sample`'s metrics (objective names → values); ``None`` = failed trial."""

    def tell_infeasible(
        self, sample: Mapping[str, Any], violation: Values, known: Values | None = None
    ) -> None:
        """Report a sample rejected without evaluation (e.g. over a cost budget).

        violation: name → relative overshoot (> 0); known: costs already computed.
        Strategies that model constraints override this; by default it is a failure.
        """
        self.tell(sample, None)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; subclasses extend it (call super)."""
        return {
            "strategy": type(self).__name__,
            "space": self.space.name,
            "labels": len(self.space),
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "n_asked": self.n_asked,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("strategy") != type(self).__name__:
            raise ConfigError(
                f"this state belongs to strategy {state.get('strategy')!r}, not "
                f"{type(self).__name__}; build the strategy the state was saved from"
            )
        if state.get("space") != self.space.name or state.get("labels") != len(self.space):
            raise ConfigError(
                f"this state was saved over space {state.get('space')!r} with "
                f"{state.get('labels')} labels; this strategy searches {self.space.name!r} with "
                f"{len(self.space)} labels"
            )
        if state.get("seed") != self.seed:
            raise ConfigError(
                f"this state was saved with seed {state.get('seed')}; build the strategy with "
                f"seed={state.get('seed')} (got {self.seed})"
            )
        self.rng.bit_generator.state = _copy_json(state["rng"])
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])

    # -- helpers for subclasses -----------------------------------------------------------------
    def objective_vector(self, metrics: Mapping[str, Any] | None) -> np.ndarray | None:
        """Told metrics as a minimization vector (M,) (``sign * value``); None when failed.

        A NaN objective counts as a failed trial; a missing one is a caller error.
        """
        if metrics is None:
            return None
        missing = [o.name for o in self.objectives if o.name not in metrics]
        if missing:
            raise ConfigError(
                f"tell() got metrics without objective(s) {missing} (keys: {sorted(metrics)}); "
                "tell None for a failed trial"
            )
        y = np.array([o.sign * float(metrics[o.name]) for o in self.objectives], dtype=np.float64)
        return None if np.isnan(y).any() else y

    def __repr__(self) -> str:
        objs = ", ".join(f"{o.name}:{o.direction}" for o in self.objectives)
        return f"{type(self).__name__}({self.space.name!r}, [{objs}], seed={self.seed})"


def _copy_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def make_strategy(
    name: str,
    space: SearchSpace,
    objectives: ObjectivesLike,
    seed: int = 0,
    **options: Any,
) -> Strategy:
    """Build the strategy registered as `name`; unknown options are a `ConfigError`."""
    check_options(name, options)
    return STRATEGIES.get(name)(space, objectives, seed, **options)


def strategy_options(name: str) -> list[str] | None:
    """The keyword options of strategy `name` (None: it takes any)."""
    params = inspect.signature(STRATEGIES.get(name).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k in params if k not in ("self", "space", "objectives", "seed")]


def check_options(name: str, options: Mapping[str, Any], key: str = "strategy") -> None:
    """Refuse options strategy `name` does not take (before anything is built or trained)."""
    known = strategy_options(name)
    unknown = [] if known is None else [k for k in options if k not in known]
    if unknown:
        raise ConfigError(
            f"{key} {name!r} has no option(s) {unknown}; its options: {known or '(none)'}"
        )
