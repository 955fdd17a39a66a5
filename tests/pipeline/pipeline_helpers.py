"""Helpers of the main-job tests: the smoke experiment in a temporary tree, run through
the real `nas` command (real Ray Tune, a real torch table measured on the fly)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
SMOKE = ROOT / "experiments" / "smoke.yaml"
#: case → seconds from `nas search` to its error (test_bad_inputs.py measures, conftest reports)
ERROR_SECONDS = pytest.StashKey[dict]()


def run_cmd(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`argv` run to its end (or `timeout`), its output captured as text; never raises on exit."""
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def nas_cmd(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return run_cmd([sys.executable, "-m", "nas.app.cli", *args], cwd=cwd, env=env, timeout=timeout)


def smoke_config(tmp: Path, **search) -> Path:
    """The smoke experiment with its run and table directories inside `tmp`."""
    doc = yaml.safe_load(SMOKE.read_text())
    doc["runs_dir"] = str(tmp / "runs")
    doc["latency"]["root"] = str(tmp / "tables")
    doc["search"].update(search)
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_dirs(tmp: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp / "runs").glob("*/*/config.yaml"))
