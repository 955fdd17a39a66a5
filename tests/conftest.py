"""Suite-wide set-up: trained quality judges are cached in the session's temp directory.

The digits judge trains once per training split (a few seconds) and is cached under
``$MQNAS_CACHE_DIR``; one directory for the session keeps tests (and the Ray workers
and `nas` processes they start, which inherit the environment) from training it again
and from writing to the user's own cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _judge_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    old = os.environ.get("MQNAS_CACHE_DIR")
    os.environ["MQNAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("mqnas_cache"))
    yield
    if old is None:
        os.environ.pop("MQNAS_CACHE_DIR", None)
    else:
        os.environ["MQNAS_CACHE_DIR"] = old
