"""Any ask/tell `Strategy` as an Optuna sampler, for Optuna studies and Ray Tune's `OptunaSearch`.

`StrategySampler(strategy)` is an ``optuna.samplers.BaseSampler``: each trial of the study
gets one ``strategy.ask()``, the objective's suggestions of the space's labels return that
sample's values, and the trial's outcome is told back (COMPLETE: the values, in the order of
``strategy.objectives``; FAIL or PRUNED: ``None``). So the strategies of mqnas — the
predictor-guided one (``"predictor"``) above all — drive a plain Optuna study::

    import optuna
    from nas.strategies import make_strategy
    from nas.strategies.optuna_sampler import StrategySampler, suggest_sample

    sampler = StrategySampler(make_strategy("evolution", space, {"acc": "max"}))
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda trial: accuracy(suggest_sample(trial, space)), n_trials=100)

(`suggest_sample` suggests every label and returns the sample dict; an objective may as well
call ``trial.suggest_categorical(label, space[label].options)`` itself, see below.) The class
is also ``nas.strategies.StrategySampler``, loaded on first access so that ``import
nas.strategies`` still does not import Optuna.

Ray Tune: ``ray.tune.search.optuna.OptunaSearch(sampler=StrategySampler(...), metric="acc",
mode="max")`` with ``param_space={label: tune.choice(options) for label, options in ...}``
(or ``OptunaSearch(space=label_distributions(space), ...)``); the trainable reads its sample
with ``params_to_sample(space, config)``. Tune checkpoints the searcher by pickling it,
sampler included, early in the run: when the strategy's injected parts (lambdas, closures)
do not pickle, build the sampler from a factory, ``StrategySampler(functools.partial(build,
space, objectives, seed))``, which pickles as the factory plus the strategy's JSON state.
(``nas.ray_tune.StrategySearcher`` is mqnas' own Tune searcher, with JSON checkpoints.)

Rules of the adapter:

- Directions: the study's directions must be the strategy's objectives' directions, in
  order (``"min"`` ↔ ``"minimize"``); every trial checks them, and a mismatch raises
  `ConfigError` naming both (the trial is marked FAIL). The objective returns the
  objectives' values in that order.
- Params: each label is an Optuna ``CategoricalDistribution`` of its options (see
  `label_distributions`). When a label mixes option types (``[0, 1, True]``, ``[1, 2.5]``),
  Optuna's value lookup would confuse them (``True == 1``), so that label's param is the
  option *index* instead; `suggest_sample`, `params_to_sample` and `sample_to_params`
  translate. This is the mapping the Optuna strategies ("nsga2", "tpe") use. An objective
  that suggests a label with other choices than these gets Optuna's "does not support
  dynamic value space" error.
- The asked sample is stored on the trial (system attr `SAMPLE_ATTR`, JSON), so the
  suggestions and the tell read it from the study's storage. A label the objective does not
  suggest counts with its asked value; a label fixed by ``study.enqueue_trial`` counts with
  the fixed value (a trial whose enqueued params fix every label is told as such without an
  ask — strategies accept samples they never asked).
- A param that is no label of the space (a learning rate next to the architecture) is drawn
  by Optuna's ``RandomSampler``, seeded from the strategy's seed; it is logged once per name.
- Deterministic: the same strategy (seed) and the same sequence of trials give the same
  params. ``study.optimize(n_jobs>1)`` works (asks and tells are serialized) but the order in
  which threads ask is not deterministic.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.errors import ConfigError, InvalidSampleError
from nas.space import SearchSpace, sample_from_json, sample_to_json
from nas.spec import Sample
from nas.strategies.base import Strategy
from nas.strategies.optuna_search import _native_ok

log = logging.getLogger(__name__)

#: Trial system attr holding the sample a trial evaluates (JSON text of the sample dict).
SAMPLE_ATTR = "mqnas:sample"

_DIRECTION = {"min": StudyDirection.MINIMIZE, "max": StudyDirection.MAXIMIZE}


# -- samples ↔ Optuna params --------------------------------------------------------------------
def _by_index(space: SearchSpace) -> frozenset[str]:
    """Labels whose param is the option index (mixed option types, see module doc)."""
    return frozenset(lab for lab, c in space.items() if not _native_ok(c.options))


def label_distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """Label → the ``CategoricalDistribution`` its param has: its options, or their indices
    when the label mixes option types (see module doc)."""
    by_index = _by_index(space)
    return {
        lab: CategoricalDistribution(tuple(range(len(c))) if lab in by_index else c.options)
        for lab, c in space.items()
    }


def sample_to_params(space: SearchSpace, sample: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna params of a sample (e.g. for ``study.enqueue_trial``)."""
    s = space.canonical(sample)
    by_index = _by_index(space)
    out: dict[str, Any] = {}
    for lab, v in s.items():
        if lab in by_index:
            # by JSON text: tuple.index would take True for an option 1
            keys = [json.dumps(o) for o in space[lab].options]
            out[lab] = keys.index(json.dumps(v))
        else:
            out[lab] = v
    return out


def params_to_sample(space: SearchSpace, params: Mapping[str, Any]) -> Sample:
    """The canonical sample that Optuna params (a trial's, a Ray Tune config) name.

    Params that are no label of the space are ignored; every label must be there.
    """
    by_index = _by_index(space)
    missing = [lab for lab in space.labels if lab not in params]
    if missing:
        raise InvalidSampleError(
            f"params lack labels of space {space.name!r}: {missing[:5]}; suggest every label "
            "(suggest_sample(trial, space) does) or give them all in the Tune param space"
        )
    out: dict[str, Any] = {}
    for lab, c in space.items():
        v = params[lab]
        if lab in by_index:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(c):
                raise InvalidSampleError(
                    f"param {lab!r} = {v!r}: label {lab!r} mixes option types, so its param "
                    f"is an option index in [0, {len(c)}); options: {list(c.options)}"
                )
            v = c.options[v]
        out[lab] = v
    return space.canonical(out)


def suggest_sample(trial: optuna.Trial, space: SearchSpace) -> Sample:
    """Suggest every label of `space` on `trial` and return the sample (with any sampler)."""
    dists = label_distributions(space)
    params = {lab: trial.suggest_categorical(lab, d.choices) for lab, d in dists.items()}
    return params_to_sample(space, params)


# -- the sampler ----------------------------------------------------------------------------------
class StrategySampler(BaseSampler):
    """An Optuna sampler that asks a strategy for each trial and tells it the outcome.

    strategy: the `Strategy`, or a factory that builds it (a callable without arguments
    that pickles, e.g. a ``functools.partial`` of a module-level function or a frozen
    dataclass). Its objectives must match the study's directions, in order (see the module
    doc for the rules). Pickling (what Ray Tune's checkpoints of `OptunaSearch` do) keeps a
    plain strategy as a pickle of itself, which fails when its injected parts are lambdas
    or closures; a sampler built from a factory pickles as the factory and the strategy's
    JSON `state_dict`, and its unpickled copy rebuilds the strategy and loads that state.

    The strategy is the sampler's own: asking or telling it elsewhere while a study runs
    desynchronizes it from the study.
    """

    def __init__(self, strategy: Strategy | Callable[[], Strategy]) -> None:
        factory: Callable[[], Strategy] | None = None
        if not isinstance(strategy, Strategy) and callable(strategy):
            if isinstance(strategy, type):  # a class would be built with no arguments
                raise ConfigError(
                    f"StrategySampler got the class {strategy.__name__}; give a Strategy "
                    "instance (make_strategy(name, space, objectives, seed)) or a factory "
                    "without arguments that builds one (functools.partial(...))"
                )
            factory, strategy = strategy, strategy()
        if not isinstance(strategy, Strategy):
            raise ConfigError(
                f"StrategySampler wraps an ask/tell nas Strategy, got {type(strategy).__name__}"
                f"{' from its factory' if factory else ''}; build one with "
                "nas.strategies.make_strategy(name, space, objectives, seed)"
            )
        self._factory = factory
        self._setup(strategy, RandomSampler(seed=strategy.seed), set())

    def _setup(self, strategy: Strategy, fallback: RandomSampler, logged: set[str]) -> None:
        self.strategy = strategy
        self.space = strategy.space
        self._dists = label_distributions(self.space)
        self._by_index = _by_index(self.space)
        self._fallback = fallback
        self._fallback_logged = logged
        # study.optimize(n_jobs>1) calls the sampler from several threads; strategies are
        # not thread-safe
        self._lock = threading.Lock()

    @property
    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Label → its param's distribution (what `label_distributions` gives)."""
        return dict(self._dists)

    def __repr__(self) -> str:
        return f"StrategySampler({self.strategy!r})"

    # -- pickling (see the class doc) ------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state: dict[str, Any] = {
                "factory": self._factory,
                "fallback": self._fallback,
                "fallback_logged": set(self._fallback_logged),
            }
            if self._factory is not None:
                state["strategy_state"] = json.dumps(self.strategy.state_dict())
                return state
            try:
                state["strategy_pickle"] = pickle.dumps(self.strategy)
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise ConfigError(
                    f"StrategySampler cannot pickle its strategy {self.strategy!r} ({e}); "
                    "Ray Tune's OptunaSearch checkpoints its sampler with pickle. Build the "
                    "sampler from a factory, StrategySampler(functools.partial(build, ...)), "
                    "so that it pickles as the factory and the strategy's JSON state"
                ) from e
            return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._factory = state["factory"]
        if self._factory is not None:
            strategy = self._factory()
            strategy.load_state_dict(json.loads(state["strategy_state"]))
        else:
            strategy = pickle.loads(state["strategy_pickle"])
        self._setup(strategy, state["fallback"], state["fallback_logged"])

    # -- BaseSampler --------------------------------------------------------------------------
    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._check_directions(study, trial)
        self._sample_of(study, trial)  # the one ask of this trial

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = sample_to_params(self.space, self._sample_of(study, trial))
        return {k: params[k] for k in search_space if k in params}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Only params that are no label get here: a label suggested with another
        # distribution than the sampler's is refused by Optuna before any sampler is asked.
        if param_name not in self._fallback_logged:
            self._fallback_logged.add(param_name)
            log.info(
                "StrategySampler: param %r is not a label of space %r; Optuna's RandomSampler "
                "(seeded from the strategy's seed) draws it",
                param_name,
                self.space.name,
            )
        with self._lock:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        attrs = study._storage.get_trial_system_attrs(trial._trial_id)
        if SAMPLE_ATTR not in attrs:  # asked before this sampler was the study's
            log.debug("StrategySampler: trial %d has no sample; not told", trial.number)
            return
        sample = self._evaluated(trial, sample_from_json(attrs[SAMPLE_ATTR]))
        metrics = None
        if state == TrialState.COMPLETE and values is not None:
            metrics = {o.name: float(v) for o, v in zip(self.strategy.objectives, values)}
        with self._lock:
            self.strategy.tell(sample, metrics)

    def reseed_rng(self) -> None:
        # Optuna reseeds when threads share the sampler; the strategy's own generator is
        # its search state, so only the fallback's is reseeded
        self._fallback.reseed_rng()

    # -- helpers -------------------------------------------------------------------------------
    def _check_directions(self, study: Study, trial: FrozenTrial) -> None:
        want = [_DIRECTION[o.direction] for o in self.strategy.objectives]
        have = list(study.directions)
        if have == want:
            return
        # end the trial the study just created, so it does not stay RUNNING
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        objs = ", ".join(f"{o.name}: {o.direction}" for o in self.strategy.objectives)
        raise ConfigError(
            f"StrategySampler: the study's directions {[d.name.lower() for d in have]} do not "
            f"match the strategy's objectives [{objs}]; create the study with "
            f"optuna.create_study(directions={[d.name.lower() for d in want]}, ...) (one per "
            "objective, in the strategy's order), or build the strategy with objectives in "
            "the study's directions and order"
        )

    def _sample_of(self, study: Study, trial: FrozenTrial) -> Sample:
        """The sample `trial` evaluates: stored on the trial, else asked now and stored."""
        attrs = study._storage.get_trial_system_attrs(trial._trial_id)
        if SAMPLE_ATTR in attrs:
            return sample_from_json(attrs[SAMPLE_ATTR])
        sample = self._enqueued(attrs.get("fixed_params") or {})
        if sample is None:
            with self._lock:
                sample = self.strategy.ask()
        study._storage.set_trial_system_attr(trial._trial_id, SAMPLE_ATTR, sample_to_json(sample))
        return sample

    def _enqueued(self, fixed: Mapping[str, Any]) -> Sample | None:
        """The sample of an enqueued trial that fixes every label, else None (then we ask)."""
        if not all(lab in fixed for lab in self.space.labels):
            return None
        try:
            return params_to_sample(self.space, fixed)
        except InvalidSampleError as e:
            log.warning("StrategySampler: enqueued params are no sample (%s); asking instead", e)
            return None

    def _evaluated(self, trial: FrozenTrial, asked: Sample) -> Sample:
        """The sample to tell: the asked one, with the labels the trial set otherwise
        (enqueued fixed params) replaced by the trial's values."""
        out = dict(asked)
        for lab, dist in self._dists.items():
            if lab in trial.params and trial.distributions.get(lab) == dist:
                v = trial.params[lab]
                out[lab] = self.space[lab].options[v] if lab in self._by_index else v
        try:
            sample = self.space.canonical(out)
        except InvalidSampleError:  # a fixed value outside the options: keep the ask's
            return asked
        if sample != asked:
            log.debug("StrategySampler: trial %d evaluated %s, not its ask", trial.number, sample)
        return sample
