"""Optuna NSGA-II and TPE as ask/tell strategies ("nsga2", "tpe").

- NSGA-II: Deb, Pratap, Agarwal & Meyarivan 2002, "A Fast and Elitist
  Multiobjective Genetic Algorithm: NSGA-II" — non-dominated sorting and
  crowding distance (their §III-A/B), with constrained domination (§IV-A):
  a feasible solution beats an infeasible one; two infeasible ones compare by
  total violation Σ_i max(0, c_i).
- TPE: Bergstra, Bardenet, Bengio & Kégl 2011, "Algorithms for Hyper-Parameter
  Optimization" — maximize l(x)/g(x) (their eq. 15's equivalent), here Optuna's
  multivariate variant (Falkner et al. 2018) with the multi-objective split of
  Ozaki et al. 2020 and the constrained split of Watanabe & Hutter 2023.

Each label is a `CategoricalDistribution` of its options (option indices when
a label mixes option types, which Optuna's value lookup would confuse, e.g. 1
and True). Directions come from the objectives.

Constraints: Optuna 5 deprecated the samplers' ``constraints_func`` (removal in
7.0) in favour of ``Trial.set_constraint(key, value)``, which both samplers read
natively; we use that. A told ``metrics["constraint"]`` (float or list) becomes
constraint ``constraint`` (``constraint.<i>``); a budget rejection
(`tell_infeasible`) becomes ``budget.<name>`` = relative overshoot > 0 on a
COMPLETE trial whose objective values are the known costs where an objective is
a cost, else the worst feasible value told so far (0 before any) — constrained
domination ranks it by violation, so the placeholders barely matter.
Non-finite objective values are told as failed.

State: Optuna has no JSON state, so the strategy keeps its event log (asks
with their option indices, tells with values and constraints, in order) and
rebuilds a fresh in-memory study by replaying it. Exactness: every ask runs on
a fresh sampler seeded from ``SeedSequence([seed, n_asked])``, so no random
state is carried between asks; the replay reproduces the study's storage
(trial order, params, values, states, constraints, NSGA-II's generation and
parent-population records) and the next ask of a restored strategy equals the
original's. While replaying, samplers return the recorded params (TPE skips its
density fit; NSGA-II still runs its bookkeeping), so a restore costs a few
milliseconds per trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.space import SearchSpace
from nas.spec import Sample
from nas.strategies.base import (
    CONSTRAINT_KEY,
    STRATEGIES,
    ObjectivesLike,
    Strategy,
    Values,
    constraint_values,
    sample_key,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[Any]:
    """Optuna logs every trial at INFO on its own handler; silence it around our calls only."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield optuna
    finally:
        optuna.logging.set_verbosity(before)


@lru_cache(maxsize=1)
def _sampler_classes() -> dict[str, type]:
    """Optuna samplers with a fixed relative search space and a replay mode.

    Defined lazily: `import nas.strategies` must not import optuna.
    """
    from optuna.samplers import NSGAIISampler, TPESampler

    class _Fixed:
        # _mq_space: label → distribution with ≥ 2 choices (the relative search space);
        # computing Optuna's intersection space over all trials per ask is O(trials · labels).
        _mq_space: dict[str, Any]
        _mq_replay: dict[str, Any] | None  # recorded params of the ask being replayed

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return dict(self._mq_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            if self._mq_replay is not None:
                return self._mq_replay[name]
            return super().sample_independent(study, trial, name, dist)  # type: ignore[misc]

    class _NSGA2(_Fixed, NSGAIISampler):
        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            # always run: it records the trial's generation and caches parent populations
            out = super().sample_relative(study, trial, search_space)
            if self._mq_replay is not None:
                return {k: self._mq_replay[k] for k in search_space}
            return out

    class _TPE(_Fixed, TPESampler):
        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            # Replay skips the fit. TPE's one storage write here is a copy of these params
            # on the running trial (for constant liar across processes); it reads them back
            # only for running trials, whose `params` hold the same values once asked.
            if self._mq_replay is not None:
                return {k: self._mq_replay[k] for k in search_space}
            return super().sample_relative(study, trial, search_space)

    return {"nsga2": _NSGA2, "tpe": _TPE}


def _native_ok(options: tuple[Any, ...]) -> bool:
    """Options Optuna can hold as themselves: one scalar type for the whole label."""
    kinds = {type(o) for o in options}
    return len(kinds) == 1 and kinds <= {str, int, float, bool}


class OptunaStrategy(Strategy):
    """Base of the Optuna strategies (see module doc); subclasses choose the sampler."""

    kind = ""

    def __init__(self, space: SearchSpace, objectives: ObjectivesLike, seed: int = 0) -> None:
        super().__init__(space, objectives, seed)
        from optuna.distributions import CategoricalDistribution

        self._labels = list(space.labels)
        # per label: the choices Optuna sees and their option index
        self._choices = {
            lab: tuple(c.options) if _native_ok(c.options) else tuple(range(len(c)))
            for lab, c in space.items()
        }
        self._choice_index = {
            lab: {v: i for i, v in enumerate(ch)} for lab, ch in self._choices.items()
        }
        self._option_index = {
            lab: {json.dumps(o): i for i, o in enumerate(space[lab].options)} for lab in space
        }
        self._dists = {lab: CategoricalDistribution(ch) for lab, ch in self._choices.items()}
        self._relative = {k: d for k, d in self._dists.items() if not d.single()}
        self._reset()

    @property
    def study(self) -> Any:
        """The live in-memory Optuna study, to inspect (e.g. `optuna.visualization`).

        Asking or telling it directly desynchronizes the strategy; use `ask`/`tell`.
        """
        return self._study

    # -- sampler ----------------------------------------------------------------------------------
    def _sampler_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _sampler(self, seed: int, replay: dict[str, Any] | None) -> Any:
        s = _sampler_classes()[self.kind](seed=seed, **self._sampler_kwargs())
        s._mq_space = self._relative
        s._mq_replay = replay
        return s

    def _ask_seed(self, n: int) -> int:
        """The seed of ask number n: a pure function of (seed, n), see module doc."""
        return int(np.random.SeedSequence([self.seed, n]).generate_state(1)[0])

    def _reset(self) -> None:
        with _quiet_optuna() as optuna:
            self._study = optuna.create_study(
                directions=[
                    "minimize" if o.direction == "min" else "maximize" for o in self.objectives
                ],
                sampler=self._sampler(self._ask_seed(0), None),
            )
        self._events: list[list[Any]] = []
        self._running: dict[int, Any] = {}  # trial number → optuna Trial not told yet
        self._number_key: dict[int, str] = {}  # trial number → sample key
        self._pending: dict[str, list[int]] = {}  # sample key → trial numbers, oldest first
        # worst feasible value told per objective (own units): the placeholder of rejections
        self._worst: list[float | None] = [None] * len(self.objectives)
        self.n_asked = self.n_told = 0

    # -- ask / tell ---------------------------------------------------------------------------------
    def ask(self) -> Sample:
        return self._apply(["ask", None])

    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        s = self.space.canonical(sample)
        y = self.objective_vector(metrics)
        cons = constraint_values(metrics)
        if y is None or not np.isfinite(y).all():
            state, values = "fail", None
        else:
            state, values = "complete", [float(metrics[o.name]) for o in self.objectives]
        if len(cons) == 1:
            constraints = {CONSTRAINT_KEY: cons[0]}
        else:
            constraints = {f"{CONSTRAINT_KEY}.{i}": c for i, c in enumerate(cons)}
        self._record_tell(s, state, values, constraints)

    def tell_infeasible(
        self, sample: Mapping[str, Any], violation: Values, known: Values | None = None
    ) -> None:
        s = self.space.canonical(sample)
        known = dict(known or {})
        values = []
        for o, worst in zip(self.objectives, self._worst):
            v = known.get(o.name)
            if v is None or not math.isfinite(float(v)):
                v = 0.0 if worst is None else worst
            values.append(float(v))
        # a violation must be > 0 to count as infeasible; keep tiny overshoots infeasible
        constraints = {f"budget.{k}": max(float(v), 1e-12) for k, v in violation.items()}
        self._record_tell(s, "complete", values, constraints)

    def _record_tell(
        self,
        s: Sample,
        state: str,
        values: list[float] | None,
        constraints: dict[str, float],
    ) -> None:
        nums = self._pending.get(sample_key(s))
        if nums:
            self._apply(["tell", nums[0], state, values, constraints])
        else:  # never asked (a warm start, or asked before a restart of the caller)
            self._apply(["add", self._indices(s), state, values, constraints])

    def _indices(self, s: Mapping[str, Any]) -> list[int]:
        return [self._option_index[lab][json.dumps(s[lab])] for lab in self._labels]

    # -- events: applied live and when replaying a state --------------------------------------------
    def _apply(self, ev: list[Any]) -> Any:
        kind = ev[0]
        if kind == "ask":
            return self._apply_ask(ev[1])
        _, ref, state, values, constraints = ev
        with _quiet_optuna() as optuna:
            st = (
                optuna.trial.TrialState.COMPLETE
                if state == "complete"
                else optuna.trial.TrialState.FAIL
            )
            if kind == "tell":
                number = int(ref)
                trial = self._running.pop(number)
                key = self._number_key.pop(number)
                self._pending[key].remove(number)
                if not self._pending[key]:
                    del self._pending[key]
                for k, v in (constraints or {}).items():
                    trial.set_constraint(k, v)
                self._study.tell(trial, values, state=st)
            elif kind == "add":
                params = {lab: self._choices[lab][int(i)] for lab, i in zip(self._labels, ref)}
                self._study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=self._dists,
                        values=values,
                        state=st,
                        constraints=dict(constraints or {}) or None,
                    )
                )
            else:
                raise ConfigError(f"unknown event {kind!r} in an Optuna strategy state")
        if state == "complete" and all(v <= 0 for v in (constraints or {}).values()):
            for i, (o, v) in enumerate(zip(self.objectives, values)):
                w = self._worst[i]
                self._worst[i] = (
                    v if w is None else (max(w, v) if o.direction == "min" else min(w, v))
                )
        self.n_told += 1
        self._events.append([kind, ref, state, values, dict(constraints or {})])
        return None

    def _apply_ask(self, replay_idx: list[int] | None) -> Sample:
        replay = None
        if replay_idx is not None:
            replay = {lab: self._choices[lab][int(i)] for lab, i in zip(self._labels, replay_idx)}
        self._study.sampler = self._sampler(self._ask_seed(self.n_asked), replay)
        with _quiet_optuna():
            trial = self._study.ask(self._dists)
        params = trial.params
        idx = [self._choice_index[lab][params[lab]] for lab in self._labels]
        opts = {lab: self.space[lab].options for lab in self._labels}
        sample = self.space.canonical({lab: opts[lab][i] for lab, i in zip(self._labels, idx)})
        key = sample_key(sample)
        self._running[trial.number] = trial
        self._number_key[trial.number] = key
        self._pending.setdefault(key, []).append(trial.number)
        self.n_asked += 1
        self._events.append(["ask", idx])
        return sample

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "kind": self.kind,
            "events": json.loads(json.dumps(self._events)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)  # checks strategy, space and seed
        want_asked, want_told = self.n_asked, self.n_told
        self._reset()
        for ev in state["events"]:
            self._apply(list(ev))
        if (self.n_asked, self.n_told) != (want_asked, want_told):
            raise ConfigError(
                f"{self.kind} state is inconsistent: replaying its events gives {self.n_asked} "
                f"asks / {self.n_told} tells, the state says {want_asked} / {want_told}"
            )
        log.debug("%s: restored %d events", self.kind, len(state["events"]))


@STRATEGIES.register("nsga2")
class NSGA2Search(OptunaStrategy):
    """Optuna's NSGA-II (uniform crossover, per-label mutation) with constrained domination."""

    kind = "nsga2"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectivesLike,
        seed: int = 0,
        *,
        population_size: int = 50,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        mutation_prob: float | None = None,
    ) -> None:
        if population_size < 2:
            raise ConfigError(f"nsga2: population_size must be ≥ 2, got {population_size}")
        self._kw = {
            "population_size": int(population_size),
            "crossover_prob": float(crossover_prob),
            "swapping_prob": float(swapping_prob),
            "mutation_prob": mutation_prob,
        }
        super().__init__(space, objectives, seed)

    def _sampler_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)


@STRATEGIES.register("tpe")
class TPESearch(OptunaStrategy):
    """Optuna's multivariate TPE (multi-objective and constrained splits)."""

    kind = "tpe"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectivesLike,
        seed: int = 0,
        *,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
        constant_liar: bool = True,
    ) -> None:
        if n_startup_trials < 0 or n_ei_candidates < 1:
            raise ConfigError(
                "tpe: n_startup_trials must be ≥ 0 and n_ei_candidates ≥ 1, got "
                f"{n_startup_trials} and {n_ei_candidates}"
            )
        self._kw = {
            "n_startup_trials": int(n_startup_trials),
            "n_ei_candidates": int(n_ei_candidates),
            "constant_liar": bool(constant_liar),
            "multivariate": True,
        }
        super().__init__(space, objectives, seed)

    def _sampler_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)
