"""experiments/notebooks/pareto.ipynb on runs that are not finished: it says what it cannot
show yet (and which run it skips) instead of raising."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nas.config import load_config
from nas.io import write_json
from nas.runs import RunDir
from nas.trials import Trial, TrialStore

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "pareto.ipynb"

pytest.importorskip("nbclient")


def _trial(i: int, state: str = "completed", strategy: str = "random") -> Trial:
    done = state == "completed"
    return Trial(
        id=f"{i:08x}_{i:05d}",  # shaped like Ray Tune's ids
        sample={"op": i},
        spec_hash=f"h{i}",
        metrics={"val_loss": 1.0 / (i + 1)} if done else {},
        cost={"latency_ms": 1.0 + i, "params": 1000.0 + i} if done else {},
        state=state,
        timings={"evaluate_s": 0.1},
        provenance={"strategy": strategy},
        error=None if done else "RuntimeError: CUDA out of memory",
        created=1_700_000_000.0 + i,
    )


def _run(root: Path, trials: list[Trial], summary: bool, cfg=None) -> Path:
    """A run directory as `nas search` leaves it (config.yaml, trials.jsonl, summary.json)."""
    run = RunDir.create(cfg or load_config(ROOT / "experiments" / "smoke.yaml"), root=root)
    store = TrialStore(run.path)
    for t in trials:
        store.append(t)
    if summary:
        done = [t for t in trials if t.state == "completed"]
        exports = [
            {
                "trial": t.id,
                "predicted_latency_ms": t.cost["latency_ms"],
                "measured_latency_ms": 1.1 * t.cost["latency_ms"],
            }
            for t in done[-2:]
        ]
        write_json(run.summary, {"chosen": exports[-1], "exports": exports})
    return run.path


def _execute(monkeypatch, **env: str) -> tuple[str, int]:
    """Run the notebook (each cell must succeed); its text output and number of images."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("MQNAS_RUN", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(out.get("text", ""))
            texts.append(out.get("data", {}).get("text/plain", ""))
            images += "image/png" in out.get("data", {})
    return "\n".join(texts), images


def test_a_run_with_only_failed_trials_has_nothing_to_plot_yet(tmp_path, monkeypatch):
    run = _run(tmp_path / "runs", [_trial(i, state="failed") for i in range(3)], summary=False)
    text, images = _execute(monkeypatch, MQNAS_RUN=str(run))
    assert images == 0
    assert "no completed trial yet (3 trials: {'failed': 3}); nothing to plot yet" in text
    assert "first error: RuntimeError: CUDA out of memory" in text
    assert "Pareto front: nothing to plot yet" in text
    assert f"{run / 'summary.json'} does not exist yet" in text
    assert "predicted vs measured: nothing to plot yet" in text
    assert f"skipping {run}: no summary.json" in text
    assert "strategies compared: nothing to plot yet" in text


def test_an_experiment_with_an_unfinished_run_skips_it_by_name(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    real = _run(runs, [_trial(i) for i in range(6)] + [_trial(6, "failed")], summary=True)
    crashed = _run(runs, [_trial(i, "failed", strategy="tpe") for i in range(2)], summary=False)
    fresh = _run(runs, [], summary=False)  # its supernet is still training: no trials.jsonl
    unfinished = _run(runs, [_trial(i, strategy="nsga2") for i in range(3)], summary=False)
    assert real.parent == crashed.parent == fresh.parent == unfinished.parent  # one experiment
    text, images = _execute(monkeypatch, MQNAS_RUN=str(real))
    assert images == 3  # front, predicted vs measured, strategies compared
    for run in (crashed, fresh, unfinished):
        assert f"skipping {run}: no summary.json (unfinished or failed run)" in text
    assert "{'random': [" in text and "nsga2" not in text  # the unfinished run is not compared
    # the newest run (the default without MQNAS_RUN) is the unfinished one: its front is
    # drawn, without a chosen architecture or measured latencies
    for run in (real, crashed, fresh):
        os.utime(run / "config.yaml", (1.0, 1.0))
    text, images = _execute(monkeypatch, MQNAS_RUNS=str(runs))
    assert images == 2  # front, strategies compared (the finished run only)
    assert f"{unfinished / 'summary.json'} does not exist yet" in text
    assert "predicted vs measured: nothing to plot yet" in text
    assert f"skipping {unfinished}: no summary.json" in text


def test_a_run_steered_by_fid_is_drawn_on_fid_with_its_samples(tmp_path, monkeypatch):
    import yaml
    from PIL import Image

    from nas.config import parse_config

    doc = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    doc["search"]["objectives"] = {"fid": "min", "latency_ms": "min"}
    trials = [_trial(i) for i in range(4)]
    for t in trials:
        t.metrics["fid"] = 100.0 - 10 * t.metrics["val_loss"]  # fid disagrees with val_loss
    run = _run(tmp_path / "runs", trials, summary=True, cfg=parse_config(doc))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(run / "samples.png")
    summary = json.loads((run / "summary.json").read_text())
    summary["sample_quality"] = {"chosen t3": {"fid": 97.5}}
    write_json(run / "summary.json", summary)
    text, images = _execute(monkeypatch, MQNAS_RUN=str(run))
    assert images == 4  # front, samples, predicted vs measured, strategies compared
    assert "chosen t3 {'fid': 97.5}" in text
    # the trials table leads with the run's objectives and is sorted by fid, best first
    header = next(line for line in text.splitlines() if " fid " in line and "latency_ms" in line)
    assert header.split()[:4] == ["id", "state", "fid", "latency_ms"]
    rows = text[text.index(header) :].splitlines()[1:5]  # the four trials, as shown
    fids = [float(line.split()[3]) for line in rows]
    assert fids == sorted(fids) and len(fids) == 4


def test_the_helpers_take_frames_without_a_completed_trial(tmp_path):
    import pandas as pd

    from nas import ConfigError
    from nas.pareto import hypervolume, hypervolume_curve, pareto_front, plot_pareto
    from nas.trials import load_run

    objectives = {"latency_ms": "min", "val_loss": "min"}
    failed = _run(tmp_path / "runs", [_trial(i, state="failed") for i in range(3)], summary=False)
    fresh = _run(tmp_path / "runs", [], summary=False)
    for df in (load_run(failed), load_run(fresh)):
        assert "val_loss" not in df.columns  # failed trials record no metrics
        assert len(pareto_front(df, objectives)) == 0
        assert hypervolume(df, objectives, [1.0, 1.0]) == 0.0
        assert hypervolume_curve(df, objectives, [1.0, 1.0]).tolist() == [0.0] * len(df)
        ax = plot_pareto(df, objectives, path=tmp_path / "p.png").axes[0]
        assert [t.get_text() for t in ax.texts] == [
            f"nothing to plot yet: no completed trial with both objectives ({len(df)} in all)"
        ]
        assert (tmp_path / "p.png").stat().st_size > 1000
    # completed rows without the objective are still a mistake worth naming
    with pytest.raises(ConfigError, match="not in the trials"):
        pareto_front(pd.DataFrame({"state": ["completed"], "val_loss": [1.0]}), objectives)
