"""Architecture encoders derived from a `SearchSpace` (never hand-written per family).

A `SpaceEncoder` turns samples into a float32 feature matrix (N, F):

- the space's own encoding (`SearchSpace.encode`): ``onehot`` (one column per label and
  option, named ``label=option``) or ``ordinal`` (option index scaled to [0, 1], one
  column per label, named ``label``); ``mixed`` is the one-hot plus the ordinal column
  of every label whose options are numbers with at least three of them (named
  ``label#``): one-hot lets a ranker learn any effect of an option, the ordinal column
  that a larger width or depth is more of the same, which few labels cannot teach;
- optionally cost features from a `latency_tables.cost.CostModel`, one column per cost
  (named ``cost:<name>``), transformed as z = (log(c) − μ) / σ. Costs span orders of
  magnitude, hence the log; μ and σ are fitted once (first `fit` / `fit_transform`) and
  stored in `state_dict()` so that a later `transform` of new samples is consistent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.space import SearchSpace

log = logging.getLogger(__name__)

KINDS = ("onehot", "ordinal", "mixed")
COST_PREFIX = "cost:"
_TINY = 1e-12


class SpaceEncoder:
    """Samples of `space` → float32 features (N, F).

    kind: ``onehot`` or ``ordinal`` (see the module docstring).
    cost_model: a `CostModel` of the same space, or None for no cost features.
    cost_features: which costs to append (``latency_ms``, ``params``, ``macs``, ``bytes``).
        None means ``("latency_ms", "params", "macs")`` when the cost model has a latency
        table and ``("params", "macs")`` when it has none.
    """

    def __init__(
        self,
        space: SearchSpace,
        kind: str = "onehot",
        cost_model: Any | None = None,
        cost_features: Sequence[str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"encoder kind {kind!r} is unknown; use one of {KINDS}")
        self.space = space
        self.kind = kind
        # mixed: the labels that also get an ordinal column (numeric, ≥ 3 options)
        self._ordered = [
            j
            for j, (_, c) in enumerate(space.items())
            if len(c) >= 3
            and all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in c.options)
        ]
        self.cost_model = cost_model
        if cost_model is None:
            if cost_features:
                raise ConfigError(
                    f"cost_features={tuple(cost_features)} need a cost model; pass "
                    "cost_model=CostModel(space, table) or drop cost_features"
                )
            self.cost_features: tuple[str, ...] = ()
        else:
            if list(cost_model.space.labels) != space.labels:
                raise ConfigError(
                    f"the cost model belongs to space {cost_model.space.name!r}, whose labels "
                    f"differ from those of {space.name!r}; build it with CostModel(space, ...)"
                )
            has_table = getattr(cost_model, "table", None) is not None
            if cost_features is None:
                cost_features = (
                    ("latency_ms", "params", "macs") if has_table else ("params", "macs")
                )
            self.cost_features = tuple(cost_features)
            if "latency_ms" in self.cost_features and not has_table:
                raise ConfigError(
                    "cost feature 'latency_ms' needs a CostModel with a latency table; pass "
                    "cost_features=('params', 'macs') or CostModel(space, LatencyTable.load(...))"
                )
        self._mean: np.ndarray | None = None  # (C,) of log costs
        self._std: np.ndarray | None = None  # (C,)

    # -- description ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        if self.kind == "ordinal":
            names = list(self.space.labels)
        else:
            names = [f"{lab}={json.dumps(o)}" for lab, c in self.space.items() for o in c.options]
        if self.kind == "mixed":
            names += [f"{self.space.labels[j]}#" for j in self._ordered]
        return names + [COST_PREFIX + c for c in self.cost_features]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def column(self, name: str) -> int:
        """Index of feature `name` (e.g. ``cost:params``); a bare cost name also works."""
        names = self.feature_names
        for cand in (name, COST_PREFIX + name):
            if cand in names:
                return names.index(cand)
        raise ConfigError(
            f"encoder has no feature {name!r}; its cost features are {list(self.cost_features)}"
        )

    def layout(self) -> dict[str, list]:
        """Which feature columns belong to which label, for rankers that model labels
        (`predictors.additive_gp`): ``groups`` holds the one-hot columns of each label
        without an ordinal column, ``ordinal`` the ordinal column of each label that has
        one (the option index in [0, 1]; ``ordinal`` encodes every label so) and
        ``covered`` the one-hot columns of those labels (the same label twice). Cost
        columns are in none of them: they are continuous features."""
        if self.kind == "ordinal":
            return {"groups": [], "ordinal": list(range(len(self.space.labels))), "covered": []}
        groups, ordinal, covered, col = [], [], [], 0
        n_onehot = sum(len(c) for _, c in self.space.items())
        ordinal_col = {j: n_onehot + i for i, j in enumerate(self._ordered)}
        for j, (_, c) in enumerate(self.space.items()):
            cols = list(range(col, col + len(c)))
            if j in ordinal_col and self.kind == "mixed":
                ordinal.append(ordinal_col[j])
                covered += cols
            else:
                groups.append(cols)
            col += len(c)
        return {"groups": groups, "ordinal": ordinal, "covered": covered}

    @property
    def fitted(self) -> bool:
        return not self.cost_features or self._mean is not None

    # -- fitting and transforming ------------------------------------------------------------
    def _log_costs(self, samples: list[Mapping[str, Any]]) -> np.ndarray:
        costs = self.cost_model.costs(samples, self.cost_features)
        c = np.stack([np.asarray(costs[w], dtype=np.float64) for w in self.cost_features], 1)
        if not np.all(np.isfinite(c)):
            raise ConfigError(
                "some cost features are NaN (a latency table misses keys these samples need); "
                "measure the missing keys with `nas latency build` or build the CostModel strict"
            )
        # (N, C); costs are ≥ 0 and span decades, log1p keeps a zero cost finite
        return np.log1p(np.maximum(c, 0.0))

    def fit(self, samples: Iterable[Mapping[str, Any]]) -> SpaceEncoder:
        """Fit the cost-feature statistics (μ, σ of log costs) on `samples`."""
        samples = list(samples)
        if self.cost_features:
            if not samples:
                raise ConfigError("fit the encoder on at least one sample")
            lc = self._log_costs(samples)
            self._mean = lc.mean(0)
            std = lc.std(0)
            self._std = np.where(std > _TINY, std, 1.0)  # a constant cost stays 0
        return self

    def transform(self, samples: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Features (N, F) float32 of `samples` (validated against the space)."""
        samples = list(samples)
        if self.kind == "mixed":
            x = np.concatenate(
                [
                    self.space.encode(samples, kind="onehot"),
                    self.space.encode(samples, kind="ordinal")[:, self._ordered],
                ],
                1,
            ).astype(np.float32)
        else:
            x = self.space.encode(samples, kind=self.kind).astype(np.float32)  # (N, F_space)
        if not self.cost_features:
            return x
        if self._mean is None:
            raise ConfigError(
                "this encoder has cost features and is not fitted; call fit(samples) or "
                "fit_transform(samples) on a reference set first (or load_state_dict)"
            )
        if not samples:
            return np.zeros((0, self.n_features), dtype=np.float32)
        z = (self._log_costs(samples) - self._mean) / self._std  # (N, C)
        return np.concatenate([x, z.astype(np.float32)], 1)

    def fit_transform(self, samples: Iterable[Mapping[str, Any]]) -> np.ndarray:
        samples = list(samples)
        return self.fit(samples).transform(samples)

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the space identity, kind, cost features and their statistics."""
        return {
            "space": self.space.name,
            "space_version": self.space.version,
            "labels": list(self.space.labels),
            "kind": self.kind,
            "cost_features": list(self.cost_features),
            "mean": None if self._mean is None else self._mean.tolist(),
            "std": None if self._std is None else self._std.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> SpaceEncoder:
        if list(state["labels"]) != self.space.labels:
            raise ConfigError(
                f"encoder state was fitted on space {state['space']!r} v{state['space_version']}, "
                f"whose labels differ from {self.space.name!r} v{self.space.version}; refit it"
            )
        if state["kind"] != self.kind or tuple(state["cost_features"]) != self.cost_features:
            raise ConfigError(
                f"encoder state is kind={state['kind']!r}, cost_features="
                f"{state['cost_features']}; build the encoder with the same settings "
                f"(this one: kind={self.kind!r}, cost_features={list(self.cost_features)})"
            )
        if state["mean"] is not None:
            self._mean = np.asarray(state["mean"], dtype=np.float64)
            self._std = np.asarray(state["std"], dtype=np.float64)
        return self

    def __repr__(self) -> str:
        return (
            f"SpaceEncoder({self.space.name!r}, kind={self.kind!r}, "
            f"features={self.n_features}, costs={list(self.cost_features)})"
        )
