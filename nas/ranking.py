"""What a ranking-predictor search consumes: an `Encoder` and a `Predictor` (structural types).

The core never imports the package that implements them (`predictors`: `SpaceEncoder`,
`make_predictor("lambdarank")`); the application injects instances, and any object with
these methods serves. Both are `runtime_checkable`, so a strategy can refuse a component
that lacks one of them at build time instead of failing deep inside a search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from nas.errors import ConfigError

T = TypeVar("T")


@runtime_checkable
class Encoder(Protocol):
    """Samples → a float feature matrix (N, F).

    An encoder with statistics (cost features standardized over a reference set) reports
    ``fitted = False`` until `fit` has seen that set; one without statistics is always
    fitted (``fitted = True``, `fit` returns at once).
    """

    @property
    def fitted(self) -> bool: ...

    def fit(self, samples: Sequence[Mapping[str, Any]]) -> object: ...

    def transform(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


@runtime_checkable
class Predictor(Protocol):
    """A ranker over encoded architectures X (N, F); lower predictions are better.

    `pretrain` learns from weak labels W (N, H) (cheap proxies: supernet loss, latency);
    `fit` then learns from strong labels y (N,). `embed` maps rows to a space where
    distances mean "different architectures" (a diverse batch is chosen in it); a
    predictor without a learned representation may return the features themselves.
    """

    def pretrain(self, X: np.ndarray, W: np.ndarray) -> object: ...

    def fit(self, X: np.ndarray, y: np.ndarray) -> object: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def embed(self, X: np.ndarray) -> np.ndarray: ...


#: The members each protocol requires, for error messages that name what is missing.
MEMBERS: dict[type, tuple[str, ...]] = {
    Encoder: ("fitted", "fit", "transform"),
    Predictor: ("pretrain", "fit", "predict", "embed"),
}


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks (empty when it satisfies it)."""
    return [m for m in MEMBERS[protocol] if not hasattr(obj, m)]


def require(obj: T, protocol: type, what: str, fix: str) -> T:
    """`obj` when it satisfies `protocol`; else a `ConfigError` naming what it lacks and `fix`."""
    if not isinstance(obj, protocol):
        raise ConfigError(
            f"{what} ({type(obj).__name__}) lacks {missing_members(obj, protocol)} of "
            f"nas.ranking.{protocol.__name__}; {fix}"
        )
    return obj
