"""What a ranking-predictor search consumes: an `Encoder` and a `Predictor` (structural types).

The core never imports the package that implements them (`predictors`: `SpaceEncoder`,
`make_predictor("lambdarank")`); the application injects instances, and any object with
these methods serves. A caller that gives none gets `default_kit`: the implementation
that registered itself in `KITS` (``predictors`` registers ``"default"`` on import, and
`default_kit` imports it by name only then). Both are `runtime_checkable`, so a strategy can refuse a component
that lacks one of them at build time instead of failing deep inside a search.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from nas.errors import ConfigError
from nas.registry import Registry

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


WeakFn = Callable[[Sequence[Mapping[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class ZeroCost:
    """A weak-label function that costs nothing to call (params, MACs, a latency table):
    the predictor-guided search then also gives its values to the rankers as features
    of every candidate, not only as pretraining targets on its weak pool.

        make_strategy("predictor", space, objectives, weak_fn=ZeroCost(my_proxy))

    Leave a weak label that runs a model (a supernet's loss) unwrapped: it is then called
    on the weak pool alone.
    """

    fn: WeakFn
    zero_cost: bool = True

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.fn(samples)


def is_zero_cost(weak_fn: object) -> bool:
    """Whether `weak_fn` declares itself free to call (see `ZeroCost`)."""
    return getattr(weak_fn, "zero_cost", False) is True


#: One-sided significance of the weak/strong rank-correlation check (`weak_agreement`).
AGREEMENT_Z = 1.645  # 5 %


def weak_agreement(weak: np.ndarray, strong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Does each weak label rank the told architectures like their strong labels do?

    weak: (N, H) weak labels of the N architectures, strong: (N,) their strong labels,
    all lower = better. Returns (ρ, sign): Spearman's ρ of each column with the strong
    labels (H,), and the orientation to use (H,): −1 where ρ is negative beyond chance
    (ρ·√(N − 1) < −`AGREEMENT_Z`, the large-sample null distribution of ρ, one-sided
    5 %): the weak label points the wrong way and is flipped; +1 otherwise (trusted as
    declared until the strong labels say otherwise).
    """
    from scipy.stats import spearmanr

    w = np.asarray(weak, dtype=np.float64)
    w = w[:, None] if w.ndim == 1 else w
    y = np.asarray(strong, dtype=np.float64).reshape(-1)
    if w.shape[0] != len(y):
        raise ConfigError(
            f"weak labels have {w.shape[0]} rows but there are {len(y)} strong labels"
        )
    rho = np.zeros(w.shape[1])
    if len(y) >= 3 and np.ptp(y) > 0:
        for h in range(w.shape[1]):
            ok = np.isfinite(w[:, h])
            if ok.sum() >= 3 and np.ptp(w[ok, h]) > 0:
                rho[h] = float(spearmanr(w[ok, h], y[ok])[0])
    z = rho * np.sqrt(max(len(y) - 1, 0))
    return rho, np.where(z < -AGREEMENT_Z, -1.0, 1.0)


@dataclass(frozen=True)
class RankingKit:
    """What a ranking-predictor search needs when the caller gives nothing.

    weak_fn: samples → (N, H) weak labels (column 0 lower = better), or None when no
    cheap label is known for the space (the ranker learns from strong labels alone).
    """

    encoder: Encoder
    #: one factory, or several whose rankers an ensemble takes in turn
    predictor_factory: Callable[[], Predictor] | tuple[Callable[[], Predictor], ...]
    weak_fn: WeakFn | None


#: name → builder ``(space, cost_fn, seed) -> RankingKit``
KITS: Registry[Callable[..., RankingKit]] = Registry("ranking kit")
KIT_PROVIDER = "predictors"  # the package that registers the "default" kit on import


def default_kit(space: Any, cost_fn: Callable[..., Any] | None, seed: int) -> RankingKit:
    """The registered default kit for `space` (zero-cost weak labels from `cost_fn`)."""
    if "default" not in KITS:
        try:
            importlib.import_module(KIT_PROVIDER)
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"no default ranking kit: the package {KIT_PROVIDER!r} is not installed; pass "
                "weak_fn, encoder and predictor_factory yourself"
            ) from e
    return KITS.get("default")(space, cost_fn, seed)
