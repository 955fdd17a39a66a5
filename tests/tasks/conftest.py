"""Fixtures of the task tests: tiny registered supernets and a digits task."""

from __future__ import annotations

import pytest
from tasks_helpers import SMALL, supernet

import nas
from nas.tasks import DigitsDenoising


@pytest.fixture
def unet() -> nas.Supernet:
    return supernet("test_mobile_unet")


@pytest.fixture
def dit() -> nas.Supernet:
    return supernet("test_mobile_dit")


@pytest.fixture(scope="module")
def unet_digits() -> DigitsDenoising:
    return DigitsDenoising.for_model(supernet("test_mobile_unet"), **SMALL)
