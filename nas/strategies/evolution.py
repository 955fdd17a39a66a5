"""Regularized (aging) evolution, multi-objective.

Real, Aggarwal, Huang & Le 2019, "Regularized Evolution for Image Classifier
Architecture Search", Algorithm 1: keep a population of the P most recently
evaluated architectures; each cycle draw S of them uniformly (the tournament),
mutate the best, evaluate the child, append it and remove the *oldest* member
(not the worst — aging is the regularizer).

Multi-objective "best of the tournament" (ours; Real et al. is single-objective):

- ``selection="pareto"`` (default): a uniformly random member of the tournament's
  non-dominated set (Pareto rank 0 of the S drawn);
- ``selection="chebyshev"``: the argmin of the augmented Tchebycheff scalarization
  with fresh random weights per tournament (ParEGO, Knowles 2006, eq. 2),
  ``s(y) = max_i w_i z_i + ρ Σ_i w_i z_i`` with ``z`` = objectives min-max normalized
  over the population, ``w ~ Dirichlet(1)``, ρ = 0.05.

Mutation resamples `mutations` labels, each to a different option (uniformly);
a mutation that the space's canonicalization undoes (a label the architecture
does not use) is retried. Failed and infeasible (``constraint`` > 0) trials never
enter the population. Asynchronous: the first P asks are random, later asks
mutate whatever has been told so far.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.pareto import nondominated_mask
from nas.space import SearchSpace
from nas.spec import Sample
from nas.strategies.base import (
    STRATEGIES,
    ObjectivesLike,
    Strategy,
    constraint_values,
    sample_key,
)

log = logging.getLogger(__name__)

SELECTIONS = ("pareto", "chebyshev")
RHO = 0.05  # augmentation of the Tchebycheff scalarization (ParEGO's value)
MUTATION_RETRIES = 20


@STRATEGIES.register("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution (see module doc).

    population_size: P, members kept (the oldest leaves); sample_size: S, the
    tournament (default min(10, P)); mutations: labels resampled per child; selection: "pareto" or
    "chebyshev" (how the tournament's best is chosen with several objectives).
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectivesLike,
        seed: int = 0,
        *,
        population_size: int = 50,
        sample_size: int | None = None,
        mutations: int = 1,
        selection: str = "pareto",
    ) -> None:
        super().__init__(space, objectives, seed)
        if population_size < 2:
            raise ConfigError(f"evolution: population_size must be ≥ 2, got {population_size}")
        if sample_size is None:
            sample_size = min(10, population_size)
        if not 1 <= sample_size <= population_size:
            raise ConfigError(
                f"evolution: sample_size must be in [1, population_size={population_size}], "
                f"got {sample_size}"
            )
        if mutations < 1:
            raise ConfigError(f"evolution: mutations must be ≥ 1, got {mutations}")
        if selection not in SELECTIONS:
            raise ConfigError(f"evolution: selection {selection!r} is unknown; use {SELECTIONS}")
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.mutations = int(mutations)
        self.selection = selection
        self._mutable = [lab for lab, c in space.items() if len(c) > 1]
        self._index = {
            lab: {json.dumps(o): i for i, o in enumerate(space[lab].options)} for lab in space
        }
        # (canonical sample, minimization vector (M,)) in order of arrival: left = oldest
        self.population: deque[tuple[Sample, np.ndarray]] = deque()

    # -- ask ---------------------------------------------------------------------------------------
    def ask(self) -> Sample:
        warmup = self.n_asked < self.population_size or not self.population
        self.n_asked += 1
        if warmup:
            return self._random()
        return self._mutate(self._select())

    def _random(self) -> Sample:
        return self.space.canonical(self.space.sample(self.rng))

    def _select(self) -> Sample:
        pop = list(self.population)
        k = min(self.sample_size, len(pop))
        idx = self.rng.choice(len(pop), size=k, replace=False)  # (S,) the tournament
        y = np.stack([pop[i][1] for i in idx])  # (S, M), minimized
        if self.selection == "pareto":
            cand = idx[nondominated_mask(y)]
            return pop[int(cand[self.rng.integers(len(cand))])][0]
        ally = np.stack([m[1] for m in pop])  # (P, M): normalization over the population
        lo, hi = ally.min(0), ally.max(0)
        z = (y - lo) / np.where(hi > lo, hi - lo, 1.0)  # (S, M) in [0, 1]
        w = self.rng.dirichlet(np.ones(y.shape[1]))  # (M,)
        score = (w * z).max(1) + RHO * (w * z).sum(1)
        return pop[int(idx[int(np.argmin(score))])][0]

    def _mutate(self, parent: Sample) -> Sample:
        if not self._mutable:
            return dict(parent)
        pkey = sample_key(parent)
        k = min(self.mutations, len(self._mutable))
        for _ in range(MUTATION_RETRIES):
            child = dict(parent)
            for j in self.rng.choice(len(self._mutable), size=k, replace=False):
                lab = self._mutable[int(j)]
                opts = self.space[lab].options
                cur = self._index[lab][json.dumps(child[lab])]
                # a different option, uniformly: shift by 1 … n-1
                child[lab] = opts[(cur + 1 + int(self.rng.integers(len(opts) - 1))) % len(opts)]
            child = self.space.canonical(child)
            if sample_key(child) != pkey:
                return child
        log.debug("evolution: %d mutations were undone by canonicalization", MUTATION_RETRIES)
        return self._random()

    # -- tell --------------------------------------------------------------------------------------
    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        s = self.space.canonical(sample)
        y = self.objective_vector(metrics)
        self.n_told += 1
        if y is None or any(c > 0 for c in constraint_values(metrics)):
            return
        self.population.append((s, y))
        while len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest leaves, whatever its fitness

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": [[dict(s), [float(v) for v in y]] for s, y in self.population],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque(
            (self.space.validate(s), np.asarray(y, dtype=np.float64))
            for s, y in state["population"]
        )
