"""The README's commands exactly as a user types them: the `nas` executable, from the
project root, with relative paths — search, SIGKILL mid-search, resume, export, train."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pipeline_helpers import run_cmd
from ray_helpers import (
    kill_session,
    kill_tagged,
    start_session,
    store_records,
    wait_for,
    worker_env,
)

from nas.io import FILE_MODE

ROOT = Path(__file__).resolve().parents[2]
N_TRIALS = 4  # experiments/smoke.yaml


def nas_exe() -> str:
    """`.venv/bin/nas` as the README spells it (relative to the project root) when that is
    the interpreter running the tests, else the `nas` beside it."""
    exe = Path(sys.executable).parent / "nas"
    readme = Path(".venv/bin/nas")
    return str(readme) if (ROOT / readme).resolve() == exe.resolve() else str(exe)


@pytest.fixture
def tag():
    t = f"readme-{uuid.uuid4().hex[:8]}"
    yield t
    kill_tagged(t)


@pytest.fixture
def new_runs():
    """The run directories under runs/smoke/ that a test creates (removed afterwards)."""
    base = ROOT / "runs" / "smoke"
    before = set(base.iterdir()) if base.is_dir() else set()
    made: list[Path] = []

    def fresh() -> list[Path]:
        now = set(base.iterdir()) if base.is_dir() else set()
        made[:] = sorted(now - before)
        return made

    yield fresh
    for p in made:
        shutil.rmtree(p, ignore_errors=True)


def _nas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = run_cmd([nas_exe(), *args], cwd=ROOT, env=env, timeout=900)
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    return r


@pytest.mark.slow
def test_readme_search_kill_resume_export_train(tag, new_runs, tmp_path):
    env = worker_env(tag)
    log = tmp_path / "first.log"
    proc = start_session([nas_exe(), "search", "experiments/smoke.yaml"], env, log, cwd=ROOT)
    try:

        def one_trial() -> bool:
            runs = new_runs()
            return proc.poll() is not None or bool(runs and store_records(runs[0]))

        wait_for(one_trial, 600, "the first finished trial of the smoke search", every=0.05)
    finally:
        kill_session(proc, tag)
    text = log.read_text()
    assert proc.returncode == -signal.SIGKILL, text[-3000:]
    assert "Traceback" not in text, text[-4000:]
    assert "Token authentication" not in text  # a local Ray starts quietly
    (run,) = new_runs()
    rel = run.relative_to(ROOT)  # runs/smoke/<timestamp>, as the README spells it
    killed_at = len(store_records(run))
    print(f"killed after {killed_at} of {N_TRIALS} trials")

    r = _nas("search", "--resume", str(rel), env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert f"report: {rel / 'report.md'}" in r.stdout
    records = store_records(run)
    assert len(records) == len({d["id"] for d in records}) == N_TRIALS
    assert [d["state"] for d in records] == ["completed"] * N_TRIALS, [d["error"] for d in records]

    trial = records[-1]["id"]
    r = _nas("export", str(rel), "--trial", trial, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    export = rel / "export" / trial
    assert r.stdout.strip().endswith(str(export)), r.stdout
    r = _nas("train", str(export), "--steps", "5", "--batch-size", "8", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (ROOT / export / "trained" / "diffusion_pytorch_model.safetensors").is_file()

    # what a run writes is readable by the group and the others the umask allows
    for p in run.rglob("*"):
        if p.is_file() and "ray" not in p.relative_to(run).parts:
            assert stat.S_IMODE(os.stat(p).st_mode) == FILE_MODE, p
