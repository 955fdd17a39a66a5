"""The ask/tell contract as pytest tests: subclass `StrategyTestCase` for your strategy.

    from nas.testing.strategies import StrategyTestCase

    class TestMyStrategy(StrategyTestCase):
        def make(self, space, objectives, seed):
            return MyStrategy(space, objectives, seed, population_size=4)

Every ``test_*`` method below then runs against the strategy `make` builds (keep it small:
a dozen asks should get past any random warm-up). The contract is the one
`nas.strategies.base` documents: asks are canonical samples of the space; the same seed
asks the same samples; `state_dict()` is JSON and a strategy rebuilt with the same
arguments asks, after `load_state_dict`, what the original asks next; `tell` accepts
failures (``None``, NaN), samples it never asked, the ``constraint`` key and
`tell_infeasible`; a state is refused by another strategy or seed.

Fixtures a subclass may override: ``space`` (default: `toy_space`, a categorical space
with mixed option types; parametrize it to run every test on several spaces) and
``objectives`` (default: `OBJECTIVES`, ``a`` minimized and ``b`` maximized). Metrics are
`toy_metrics`, conflicting functions of the sample's ordinal encoding. A strategy that
tells a missing objective as a failure rather than refusing it sets
``strict_tell = False``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from nas.errors import ConfigError, InvalidSampleError
from nas.space import SearchSpace
from nas.spec import Sample
from nas.strategies.base import Objective, ObjectivesLike, Strategy, as_objectives
from nas.strategies.evolution import RegularizedEvolution
from nas.strategies.random_search import RandomSearch

#: The kit's default objectives: two that `toy_metrics` makes conflict.
OBJECTIVES: tuple[Objective, ...] = (Objective("a", "min"), Objective("b", "max"))


def toy_space() -> SearchSpace:
    """A user's own categorical space: mixed option types, a bool/int label, a fixed label."""
    return SearchSpace.from_choices(
        {
            "op": ["conv3", "conv5", "skip"],
            "width": [8, 16, 32, 64],
            "ratio": [0.25, 0.5, 1.0],
            "flag": [0, 1, True],  # 1 and True are distinct options
            "fixed": ["only"],
        },
        name="toy_choices",
    )


def toy_metrics(
    space: SearchSpace, sample: Mapping[str, Any], objectives: ObjectivesLike = OBJECTIVES
) -> dict[str, float]:
    """Conflicting objectives of any space from the ordinal encoding x of `sample`.

    The first objective is Σx, the second the first half's Σ minus half the second half's;
    any further one a fixed signed mix of x, so that no sample is best at all of them.
    """
    objectives = as_objectives(objectives)
    x = space.encode([sample], "ordinal")[0].astype(np.float64)
    half = max(1, len(x) // 2)
    values = [float(x.sum()), float(x[:half].sum() - 0.5 * x[half:].sum())]
    for k in range(2, len(objectives)):
        values.append(float(np.roll(x, k) @ np.linspace(1.0, -1.0, len(x))))
    return {o.name: v for o, v in zip(objectives, values)}


def ask_and_tell(
    strategy: Strategy,
    space: SearchSpace,
    n: int,
    objectives: ObjectivesLike = OBJECTIVES,
    fail_every: int = 0,
    pending: int = 2,
) -> tuple[list[Sample], list[Sample]]:
    """Ask `n` samples keeping up to `pending` in flight, as a parallel search does.

    Each sample that leaves the flight is told its `toy_metrics`, or a failure (``None``)
    at every `fail_every`-th ask. Returns (every sample asked, those still in flight).
    """
    asked: list[Sample] = []
    inflight: list[Sample] = []
    for i in range(n):
        s = strategy.ask()
        asked.append(s)
        inflight.append(s)
        if len(inflight) > pending:
            p = inflight.pop(0)
            failed = fail_every and i % fail_every == 0
            strategy.tell(p, None if failed else toy_metrics(space, p, objectives))
    return asked, inflight


def invalid_value(space: SearchSpace, label: str) -> Any:
    """A value outside `label`'s options: past the largest for numbers, else a string."""
    options = space[label].options
    if all(isinstance(o, (int, float)) for o in options):
        return max(options) + 1
    return "not-an-option"


class StrategyTestCase:
    """The contract tests of an ask/tell strategy (see the module docstring).

    Not collected itself (its name does not start with ``Test``); a subclass named
    ``Test...`` is, and provides `make`.
    """

    #: How many samples the contract tests ask of one strategy.
    n_asks: ClassVar[int] = 14
    #: Whether `tell` refuses metrics that lack an objective (`ConfigError`), as
    #: `Strategy.objective_vector` does; False: such a tell counts as a failed trial.
    strict_tell: ClassVar[bool] = True

    def make(self, space: SearchSpace, objectives: ObjectivesLike, seed: int) -> Strategy:
        """The strategy under test over `space`, built small."""
        raise NotImplementedError(
            f"{type(self).__name__} subclasses StrategyTestCase; define "
            "make(self, space, objectives, seed) returning the strategy under test, e.g. "
            "MyStrategy(space, objectives, seed, population_size=4)"
        )

    @pytest.fixture
    def space(self) -> SearchSpace:
        return toy_space()

    @pytest.fixture
    def objectives(self) -> ObjectivesLike:
        return OBJECTIVES

    def _asks_are_canonical(self, space: SearchSpace, asked: Sequence[Sample]) -> None:
        for s in asked:
            assert space.canonical(s) == s  # validate passes, and nothing left to canonicalize
            assert list(s) == space.labels

    # -- asks -----------------------------------------------------------------------------
    def test_asks_are_valid_canonical_samples(self, space, objectives):
        st = self.make(space, objectives, 0)
        asked, _ = ask_and_tell(st, space, self.n_asks, objectives, fail_every=4)
        self._asks_are_canonical(space, asked)
        assert len({json.dumps(s) for s in asked}) > 1

    def test_same_seed_same_asks_other_seed_other_asks(self, space, objectives):
        a, b, c = (
            ask_and_tell(self.make(space, objectives, seed), space, self.n_asks, objectives)[0]
            for seed in (3, 3, 4)
        )
        assert a == b
        assert a != c

    # -- state ------------------------------------------------------------------------------
    def test_state_round_trip_through_json_gives_the_same_next_asks(self, space, objectives):
        st = self.make(space, objectives, 7)
        _, inflight = ask_and_tell(st, space, self.n_asks - 3, objectives, fail_every=3)
        st.tell(st.ask(), {**toy_metrics(space, space.default(), objectives), "constraint": 0.5})
        state = json.loads(json.dumps(st.state_dict()))  # JSON only, no pickle
        restored = self.make(space, objectives, 7)
        restored.load_state_dict(state)
        assert [st.ask() for _ in range(3)] == [restored.ask() for _ in range(3)]
        for p in inflight:  # asks in flight at save time are told after the restore
            st.tell(p, toy_metrics(space, p, objectives))
            restored.tell(p, toy_metrics(space, p, objectives))
        assert [st.ask() for _ in range(4)] == [restored.ask() for _ in range(4)]
        assert json.dumps(st.state_dict()) == json.dumps(restored.state_dict())

    def test_load_state_refuses_another_strategy_or_seed(self, space, objectives):
        state = self.make(space, objectives, 1).state_dict()
        with pytest.raises(ConfigError, match="seed"):
            self.make(space, objectives, 2).load_state_dict(state)
        st = self.make(space, objectives, 1)
        other = RegularizedEvolution if type(st) is RandomSearch else RandomSearch
        foreign = other(space, objectives, 1)
        with pytest.raises(ConfigError, match="belongs to strategy"):
            foreign.load_state_dict(state)
        with pytest.raises(ConfigError, match="belongs to strategy"):
            st.load_state_dict(foreign.state_dict())

    # -- tells ------------------------------------------------------------------------------
    def test_failed_and_foreign_tells_do_not_crash(self, space, objectives):
        st = self.make(space, objectives, 0)
        for _ in range(10):
            st.tell(st.ask(), None)  # every trial failed
        st.tell(space.max(), toy_metrics(space, space.max(), objectives))  # never asked
        names = [o.name for o in as_objectives(objectives)]
        nan = {n: 1.0 for n in names} | {names[0]: math.nan}
        st.tell(space.min(), nan)  # NaN objective = failed
        for _ in range(4):
            s = st.ask()
            assert space.canonical(s) == s
            st.tell(s, toy_metrics(space, s, objectives))

    def test_tell_checks_its_inputs(self, space, objectives):
        st = self.make(space, objectives, 0)
        s = st.ask()
        if self.strict_tell:
            partial = {o.name: 1.0 for o in as_objectives(objectives)[:-1]}
            with pytest.raises(ConfigError, match="without objective"):
                st.tell(s, partial)  # an objective missing: a caller error, not a failed trial
        for label in space.labels:
            with pytest.raises(InvalidSampleError):
                st.tell(
                    {**s, label: invalid_value(space, label)}, toy_metrics(space, s, objectives)
                )

    def test_constraint_key_takes_a_float_or_a_list(self, space, objectives):
        st = self.make(space, objectives, 0)
        for c in (2.5, [-1.0, 0.5], 0.0, -3.0):  # values ≤ 0 are feasible
            s = st.ask()
            st.tell(s, {**toy_metrics(space, s, objectives), "constraint": c})
        asked, _ = ask_and_tell(st, space, 4, objectives)
        self._asks_are_canonical(space, asked)
        json.dumps(st.state_dict())

    def test_tell_infeasible_reports_a_rejected_sample(self, space, objectives):
        st = self.make(space, objectives, 0)
        for _ in range(3):  # rejected by a cost budget before any evaluation
            st.tell_infeasible(st.ask(), {"params": 0.25}, known={"params": 1.25})
        asked, _ = ask_and_tell(st, space, 4, objectives)
        self._asks_are_canonical(space, asked)
        json.dumps(st.state_dict())
