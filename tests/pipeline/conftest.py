"""The session's smoke run, shared by the tests that read its outputs."""

import statistics
from pathlib import Path

import pytest
from pipeline_helpers import ERROR_SECONDS, nas_cmd, run_dirs, smoke_config


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


def pytest_terminal_summary(terminalreporter, config):
    times = config.stash.get(ERROR_SECONDS, {})
    if times:
        slowest = max(times, key=times.get)
        terminalreporter.write_line(
            f"seconds to a bad-input error: {len(times)} cases, median "
            f"{statistics.median(times.values()):.2f}, max {times[slowest]:.2f} ({slowest})"
        )
        slow = {k: round(v, 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1]) if v > 5}
        if slow:
            terminalreporter.write_line(f"  over 5 s: {slow}")
