"""Properties every registered space must have: the conformance kits over the registry.

For min, max and 20 random samples (6 for the larger shipped supernets) the extracted
standalone model computes what the activated supernet computes; export → from_pretrained
gives the same model back (`nas.testing.spaces`). Spaces too large for a CPU test (SD-sized)
are checked on their specs only.
"""

from __future__ import annotations

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES
from nas.testing.spaces import (
    SpaceConformance,
    SupernetConformance,
    registered_entries,
    weight_count,
)

MAX_TEST_WEIGHTS = 20_000_000


def _small_spaces() -> list[str]:
    out = []
    for name in SPACES.names():
        space = SPACES.get(name).space()
        if weight_count(space.freeze(space.max())) <= MAX_TEST_WEIGHTS:
            out.append(name)
    return out


SMALL = _small_spaces()


def test_registry_has_real_and_tiny_spaces():
    names = SPACES.names()
    assert {"mobile_unet", "mobile_dit"} <= set(names)
    assert any(n.startswith("test_") for n in names)


class TestShippedSupernets(SupernetConformance):
    """Every shipped space small enough to build its supernet on a CPU."""

    entry = registered_entries(SMALL)


class TestLargeShippedSpaces(SpaceConformance):
    """The other shipped spaces (SD-sized): the space tests only, no model is built."""

    entry = registered_entries([n for n in SPACES.names() if n not in SMALL])
