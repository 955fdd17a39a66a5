"""Search-space algebra: a flat, ordered mapping of dotted labels to choices.

This is the only contract between a space and an algorithm (the shape NNI v3
uses): strategies and predictors see labels and options, never modules. Any
categorical space — a family registered in `search_spaces/`, a user's own, a
NAS benchmark — is declared the same way (`SearchSpace.from_choices`).

Options of a `Choice` are listed from the smallest / cheapest to the largest:
`min()` takes the first of every choice, `max()` the last.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.errors import ConfigError, InvalidSampleError
from nas.spec import ArchSpec, Sample, Value

RngLike = np.random.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclass(frozen=True)
class Choice:
    """A categorical choice among JSON scalars, ordered from smallest to largest.

    `default` is one of the options (the largest when not given).
    """

    options: tuple[Value, ...]
    default: Value = None

    def __post_init__(self) -> None:
        opts = tuple(self.options)
        object.__setattr__(self, "options", opts)
        if not opts:
            raise ConfigError("a Choice needs at least one option")
        if len(set(map(json.dumps, opts))) != len(opts):
            raise ConfigError(f"Choice options must be distinct, got {list(opts)}")
        for o in opts:
            if not isinstance(o, (int, float, str, bool)):
                raise ConfigError(
                    f"Choice option {o!r} is a {type(o).__name__}; options must be JSON "
                    "scalars (int, float, str, bool)"
                )
        if self.default is None:
            object.__setattr__(self, "default", opts[-1])
        elif self.default not in opts:
            raise ConfigError(f"Choice default {self.default!r} is not among {list(opts)}")
        # membership in O(1): validation runs on every candidate a strategy screens.
        # bool is an int in Python: the flag keeps True from matching an option 1.
        object.__setattr__(self, "_allowed", frozenset((o, isinstance(o, bool)) for o in opts))

    def allows(self, value: Any) -> bool:
        """Whether `value` is one of the options (True is not 1)."""
        try:
            return (value, isinstance(value, bool)) in self._allowed
        except TypeError:  # unhashable: no JSON scalar, so no option
            return False

    def __len__(self) -> int:
        return len(self.options)

    def index(self, value: Value) -> int:
        return self.options.index(value)


class SearchSpace:
    """An ordered mapping label → `Choice`, with sampling, validation and encoding.

    `builder(space, sample) -> ArchSpec` gives `freeze` its structure; spaces
    declared with `from_choices` have none and freeze to a flat spec.
    `canonicalize(sample) -> sample` maps labels a sample does not use (e.g.
    the inner width of a block its depth removed) to their defaults, so that
    equal architectures have equal hashes.
    """

    def __init__(
        self,
        choices: Mapping[str, Choice | Sequence[Value]],
        name: str = "custom",
        version: str = "1",
        builder: Callable[[SearchSpace, Sample], ArchSpec] | None = None,
        canonicalize: Callable[[Sample], Sample] | None = None,
    ) -> None:
        if not choices:
            raise ConfigError(f"search space {name!r} has no choices")
        self._choices: dict[str, Choice] = {}
        for label, c in choices.items():
            if not isinstance(label, str) or not label:
                raise ConfigError(f"search-space labels must be non-empty strings, got {label!r}")
            self._choices[label] = c if isinstance(c, Choice) else Choice(tuple(c))
        # option value → index per label, read by `encode` with C-level lookups
        self._lookup = [
            {_option_key(o): i for i, o in enumerate(c.options)} for c in self._choices.values()
        ]
        self._getter = operator.itemgetter(*self._choices)
        self.name = name
        self.version = version
        self._builder = builder
        self._canonicalize = canonicalize

    @classmethod
    def from_choices(
        cls,
        choices: Mapping[str, Sequence[Value] | Choice],
        name: str = "custom",
        version: str = "1",
    ) -> SearchSpace:
        """Declare any categorical space: ``{"op.0": ["conv3", "conv5"], "width": [16, 32]}``."""
        return cls(choices, name=name, version=version)

    # -- mapping protocol ---------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self._choices)

    def __getitem__(self, label: str) -> Choice:
        return self._choices[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def __len__(self) -> int:
        return len(self._choices)

    def items(self) -> Iterable[tuple[str, Choice]]:
        return self._choices.items()

    @property
    def size(self) -> int:
        """Number of distinct samples (labels a sample ignores still count)."""
        return math.prod(len(c) for c in self._choices.values())

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self)} labels, size≈{float(self.size):.3g})"

    # -- samples ------------------------------------------------------------------------
    def sample(self, rng: RngLike = None) -> Sample:
        """One uniformly random sample (seeded by an int or a numpy Generator)."""
        g = as_rng(rng)
        return {lab: c.options[int(g.integers(len(c)))] for lab, c in self._choices.items()}

    def sample_many(self, n: int, rng: RngLike = None) -> list[Sample]:
        g = as_rng(rng)
        idx = {lab: g.integers(len(c), size=n) for lab, c in self._choices.items()}
        return [
            {lab: c.options[int(idx[lab][i])] for lab, c in self._choices.items()} for i in range(n)
        ]

    def default(self) -> Sample:
        return {lab: c.default for lab, c in self._choices.items()}

    def min(self) -> Sample:
        return {lab: c.options[0] for lab, c in self._choices.items()}

    def max(self) -> Sample:
        return {lab: c.options[-1] for lab, c in self._choices.items()}

    def validate(self, sample: Mapping[str, Any]) -> Sample:
        """Return the sample as a dict in label order; raise `InvalidSampleError` if foreign."""
        if not isinstance(sample, Mapping):
            raise InvalidSampleError(
                f"a sample of space {self.name!r} is a mapping label → value, got "
                f"{type(sample).__name__}"
            )
        unknown = [k for k in sample if k not in self._choices]
        if unknown:
            raise InvalidSampleError(
                f"sample has labels unknown to space {self.name!r}: {unknown[:5]}"
                f"{' …' if len(unknown) > 5 else ''}; known labels start with {self.labels[:5]}"
            )
        missing = [k for k in self._choices if k not in sample]
        if missing:
            raise InvalidSampleError(
                f"sample lacks labels of space {self.name!r}: {missing[:5]}"
                f"{' …' if len(missing) > 5 else ''}; fill them from space.default()"
            )
        for label, c in self._choices.items():
            v = sample[label]
            if not c.allows(v):
                raise InvalidSampleError(
                    f"sample[{label!r}] = {v!r} is not allowed; options: {list(c.options)}"
                )
        return {label: sample[label] for label in self._choices}

    def canonical(self, sample: Mapping[str, Any]) -> Sample:
        s = self.validate(sample)
        return self._canonicalize(s) if self._canonicalize else s

    def freeze(self, sample: Mapping[str, Any]) -> ArchSpec:
        """The concrete architecture of a sample (validated and canonicalized)."""
        s = self.canonical(sample)
        if self._builder is None:
            return ArchSpec(self.name, self.version, tuple(s.items()))
        return self._builder(self, s)

    # -- encoding -----------------------------------------------------------------------
    def encode(self, samples: Iterable[Mapping[str, Any]], kind: str = "ordinal") -> np.ndarray:
        """A numeric matrix with one row per sample.

        kind: ``index`` (option index per label, int), ``ordinal`` (index scaled
        to [0, 1], float32) or ``onehot`` (one column per label and option).
        """
        samples = list(samples)
        idx = self._index_matrix(samples)
        if kind == "index":
            return idx
        sizes = np.array([len(c) for c in self._choices.values()])
        if kind == "ordinal":
            return (idx / np.maximum(sizes - 1, 1)).astype(np.float32)
        if kind == "onehot":
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            out = np.zeros((len(samples), int(sizes.sum())), dtype=np.float32)
            out[np.arange(len(samples))[:, None], offsets + idx] = 1.0
            return out
        raise ConfigError(f"encode kind {kind!r} is unknown; use 'index', 'ordinal' or 'onehot'")

    def _index_matrix(self, samples: list[Mapping[str, Any]]) -> np.ndarray:
        """Option index of every label of every sample, (N, labels) int64.

        The hot path of vectorized costs: one C-level dict lookup per value (values
        match options by equality, so True matches an option 1; `validate` is stricter).
        A sample that does not map is validated to raise the error that names its fault.
        """
        lookup, getter, n = self._lookup, self._getter, len(self._choices)

        def row(s: Mapping[str, Any]) -> Iterator[int]:
            if len(s) != n:
                raise KeyError("labels differ")
            return map(dict.__getitem__, lookup, getter(s) if n > 1 else (getter(s),))

        try:
            flat = np.fromiter(
                itertools.chain.from_iterable(map(row, samples)),
                dtype=np.int64,
                count=len(samples) * n,
            )
            return flat.reshape(len(samples), n)
        except (KeyError, TypeError):
            pass
        # Slow path: `validate` raises the error that names a foreign sample's fault;
        # unhashable values (lists) are looked up by their JSON text.
        rows = [
            [lk[_option_key(v)] for lk, v in zip(lookup, self.validate(s).values())]
            for s in samples
        ]
        return np.array(rows, dtype=np.int64).reshape(len(samples), n)

    def decode(self, idx: np.ndarray) -> list[Sample]:
        """Inverse of ``encode(kind='index')``."""
        idx = np.atleast_2d(np.asarray(idx))
        choices = list(self._choices.items())
        return [{lab: c.options[int(row[j])] for j, (lab, c) in enumerate(choices)} for row in idx]


def _option_key(value: Any) -> Any:
    """A dict key for an option value: itself, or its JSON text when unhashable."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def sample_to_json(sample: Mapping[str, Any]) -> str:
    return json.dumps(dict(sample), sort_keys=False)


def sample_from_json(text: str) -> Sample:
    return dict(json.loads(text))
