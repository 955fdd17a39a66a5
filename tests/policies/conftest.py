"""Fixtures of the policy tests (helpers live in `policy_helpers`)."""

from __future__ import annotations

import pytest

from latency_tables.cost import CostModel
from latency_tables.testing import synthetic_table
from nas import SPACES


@pytest.fixture(scope="session")
def unet_cost(tmp_path_factory) -> CostModel:
    space = SPACES.get("test_mobile_unet").space()
    return CostModel(space, synthetic_table(space, tmp_path_factory.mktemp("tables")))
