"""Random search: uniform samples of the space.

Bergstra & Bengio 2012, "Random Search for Hyper-Parameter Optimization"; Li &
Talwalkar 2019, "Random Search and Reproducibility for NAS" (the baseline every
NAS method must beat). Each label's option is drawn independently and uniformly,
x_L ~ U{options(L)}; the sample is then canonicalized (labels an architecture
does not use take their defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.spec import Sample
from nas.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    """Uniform random sampling; tells only count (and check the metrics)."""

    def ask(self) -> Sample:
        self.n_asked += 1
        return self.space.canonical(self.space.sample(self.rng))

    def tell(self, sample: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        self.space.validate(sample)
        self.objective_vector(metrics)  # a caller error (missing objective) surfaces here too
        self.n_told += 1
