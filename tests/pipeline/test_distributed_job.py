"""`nas search` with ``supernet.distributed`` as a user runs it: the `nas` command, a real
local Ray, two Ray Train workers (gloo). One worker process is killed (SIGKILL) in the
middle of the supernet's training; the run stops with a message naming its intact
checkpoints, and ``nas search --resume RUN --workers 1`` finishes it on one worker
without losing or rewriting a checkpoint."""

import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import run_cmd, run_dirs, smoke_config
from ray_helpers import kill_tagged, start_session, tagged_pids, wait_for, worker_env

from nas.training import read_checkpoint

STEPS, EVERY = 40, 5


@pytest.fixture
def tag():
    t = f"dp-{uuid.uuid4().hex[:8]}"
    yield t
    kill_tagged(t)


def _nas() -> str:
    return str(Path(sys.executable).parent / "nas")


def _train_workers(tag: str) -> list[int]:
    """The Ray Train worker processes of this test (their process title names the actor)."""
    out = []
    for pid in tagged_pids(tag):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"RayTrainWorker" in cmdline:
            out.append(pid)
    return out


def _latest(run_root: Path) -> int:
    runs = run_dirs(run_root)
    p = runs[0] / "checkpoints" / "latest.json" if runs else None
    try:
        return int(json.loads(p.read_text())["step"]) if p else 0
    except (OSError, ValueError):  # being replaced as we read it
        return 0


@pytest.mark.slow
def test_killed_worker_then_resume_with_another_worker_count(tag, tmp_path):
    cfg = smoke_config(tmp_path, num_trials=2)
    doc = yaml.safe_load(cfg.read_text())
    doc["supernet"].update(steps=STEPS, checkpoint_every=EVERY, distributed={"num_workers": 2})
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = worker_env(tag, OMP_NUM_THREADS="1")
    log = tmp_path / "first.log"
    proc = start_session([_nas(), "search", str(cfg), "-q"], env, log, cwd=tmp_path)
    try:
        wait_for(
            lambda: proc.poll() is not None or _latest(tmp_path) >= EVERY,
            600,
            "the first checkpoint of the data-parallel training",
            every=0.05,
        )
        assert proc.poll() is None, log.read_text()[-4000:]
        workers = _train_workers(tag)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 1, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert "supernet training failed on its Ray Train workers" in text, text[-4000:]
    assert "are intact" in text and "--resume" in text, text[-4000:]
    (run,) = run_dirs(tmp_path)
    done = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*"))
    assert done and done[-1] < STEPS, done  # killed mid-training
    kept = {s: read_checkpoint(run / "checkpoints" / f"step_{s}").model for s in done}

    r = run_cmd(
        [_nas(), "search", "--resume", str(run), "--workers", "1", "-q"],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    ckpt = read_checkpoint(run / "checkpoints" / f"step_{STEPS}")  # hashes checked
    assert [h["step"] for h in ckpt.state["history"]] == list(range(1, STEPS + 1))
    for s, model in kept.items():  # what the 2 workers wrote is still there, unchanged
        path = run / "checkpoints" / f"step_{s}"
        if path.exists():  # older ones are pruned (keep_checkpoints), never rewritten
            again = read_checkpoint(path).model
            assert all(again[k].equal(v) for k, v in model.items()), s
    summary = json.loads((run / "summary.json").read_text())
    assert summary["chosen"] is not None


def test_dry_run_estimates_the_step_time_of_the_configured_workers(tmp_path):
    cfg = smoke_config(tmp_path)
    r = run_cmd([_nas(), "search", str(cfg), "--dry-run", "--workers", "2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    assert "on 1 worker at 4 rows" in lines["supernet"], r.stdout  # 8 rows over 2 workers
    assert "s for 4 steps at global batch 8" in lines["2"], r.stdout
    assert "step 3/3" not in r.stderr  # the probe's steps are not logged as a training
    assert not run_dirs(tmp_path)  # a dry run writes nothing

    r = run_cmd([_nas(), "search", str(cfg), "--dry-run", "--workers", "3"], cwd=tmp_path)
    assert r.returncode == 2
    assert "batch_size=8 does not split evenly" in r.stderr and "multiple of 3" in r.stderr
