"""Search-space algebra: sampling, validation, encoding, freezing, hashing."""

import json

import numpy as np
import pytest

from nas import ArchSpec, Choice, ConfigError, InvalidSampleError, SearchSpace
from nas.space import sample_from_json, sample_to_json


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_choices(
        {
            "width": [16, 32, 64],
            "op": ["conv3", "conv5"],
            "skip": [False, True],
            "ratio": [0.5, 1.0],
        },
        name="bench",
    )


def test_size_min_max_default(space):
    assert space.size == 3 * 2 * 2 * 2
    assert space.min() == {"width": 16, "op": "conv3", "skip": False, "ratio": 0.5}
    assert space.max() == {"width": 64, "op": "conv5", "skip": True, "ratio": 1.0}
    assert space.default() == space.max()
    assert SearchSpace.from_choices({"a": Choice((1, 2, 3), default=2)}).default() == {"a": 2}


def test_sampling_is_seeded_and_covers_options(space):
    assert space.sample(3) == space.sample(3)
    many = space.sample_many(400, rng=0)
    assert many == space.sample_many(400, rng=0)
    for label in space:
        assert {s[label] for s in many} == set(space[label].options)
    rng = np.random.default_rng(1)
    draws = [space.sample(rng) for _ in range(10)]  # a shared generator advances
    assert len({json.dumps(d, sort_keys=True) for d in draws}) > 1
    for s in many[:20]:
        space.validate(s)


def test_validate_names_label_value_and_options(space):
    bad = dict(space.max(), width=48)
    with pytest.raises(InvalidSampleError, match=r"width.*48.*\[16, 32, 64\]"):
        space.validate(bad)
    with pytest.raises(InvalidSampleError, match="lacks labels.*op"):
        space.validate({"width": 16, "skip": False, "ratio": 0.5})
    with pytest.raises(InvalidSampleError, match="unknown.*depth"):
        space.validate(dict(space.max(), depth=3))
    with pytest.raises(InvalidSampleError, match="skip"):
        space.validate(dict(space.max(), skip=1))  # 1 is not True here
    with pytest.raises(InvalidSampleError, match="mapping"):
        space.validate([1, 2])


def test_bad_declarations_are_refused():
    with pytest.raises(ConfigError, match="at least one"):
        Choice(())
    with pytest.raises(ConfigError, match="distinct"):
        Choice((1, 1))
    with pytest.raises(ConfigError, match="JSON scalars"):
        Choice(([1], [2]))
    with pytest.raises(ConfigError, match="default"):
        Choice((1, 2), default=3)
    with pytest.raises(ConfigError, match="no choices"):
        SearchSpace({})


@pytest.mark.parametrize("kind", ["index", "ordinal", "onehot"])
def test_encode(space, kind):
    samples = space.sample_many(7, rng=2)
    x = space.encode(samples, kind)
    assert x.shape[0] == 7
    if kind == "index":
        assert space.decode(x) == samples
    if kind == "ordinal":
        assert x.min() >= 0 and x.max() <= 1
        np.testing.assert_array_equal(space.encode([space.max()], kind), np.ones((1, len(space))))
    if kind == "onehot":
        assert x.shape[1] == sum(len(space[lab]) for lab in space)
        np.testing.assert_array_equal(x.sum(1), np.full(7, len(space)))
    with pytest.raises(ConfigError, match="kind"):
        space.encode(samples, "binary")


def test_freeze_json_round_trip_and_stable_hash(space):
    s = space.sample(5)
    spec = space.freeze(s)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.hash == spec.hash
    assert len(spec.hash) == 16
    # key order of the sample does not change the hash
    assert space.freeze(dict(reversed(list(s.items())))).hash == spec.hash
    assert space.freeze(dict(s, width=16 if s["width"] != 16 else 32)).hash != spec.hash
    assert "bench[" in spec.short()
    assert sample_from_json(sample_to_json(s)) == s
    json.loads(spec.to_json())
