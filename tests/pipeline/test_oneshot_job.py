"""`nas search` with `search.kind: oneshot`: DQSS + PaS + depth through the whole pipeline."""

import json

import pytest
import yaml
from pipeline_helpers import nas_cmd, run_dirs, smoke_config

import nas
import search_spaces  # noqa: F401  (registers the spaces)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [{}, {"mode": "ptq", "calibrate_steps": 2, "policies": ["dqss"]}],
    ids=["joint", "ptq-calibrated"],
)
def test_oneshot_experiment_runs_end_to_end(smoke_run, tmp_path, extra):
    cfg = smoke_config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    # reuse the smoke run's measured table: nothing is measured twice
    doc["latency"]["root"] = str(smoke_run.parents[2] / "tables")
    doc["search"] = {
        "kind": "oneshot",
        "oneshot": {"target_ms": 3.0, "steps": 4, "warmup_steps": 1, "lam": 1.0, **extra},
        "finetune": {"steps": 2, "batch_size": 8},
    }
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = nas_cmd("search", str(cfg), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert ("calibrated w8a8:lsq" in r.stderr) == bool(extra)  # LSQ has a step to calibrate
    (run,) = run_dirs(tmp_path)
    found = json.loads((run / "oneshot.json").read_text())
    assert len(found["history"]) == 4
    assert {"task_loss", "expected_latency_ms", "lam"} <= set(found["history"][0])
    df = nas.load_run(run)
    assert len(df) == 1 and df["state"].iloc[0] == "completed"
    assert df["prov.strategy"].iloc[0] == "oneshot"
    summary = json.loads((run / "summary.json").read_text())
    space = nas.get_space("test_mobile_unet").space()
    assert summary["chosen"]["arch"] == space.freeze(found["sample"]).short()
