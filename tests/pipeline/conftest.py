"""The session's smoke run, shared by the tests that read its outputs."""

from pathlib import Path

import pytest
from pipeline_helpers import nas_cmd, run_dirs, smoke_config


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One complete smoke run (shared by the tests that read its outputs)."""
    tmp = tmp_path_factory.mktemp("smoke")
    cfg = smoke_config(tmp)
    r = nas_cmd("search", str(cfg), "-q", cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    (run,) = run_dirs(tmp)
    (run / "stdout.txt").write_text(r.stdout)
    return run
