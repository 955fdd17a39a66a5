"""`nas search` end to end on the smoke experiment; export, train, notebook; bad input."""

import json
import os
from pathlib import Path

import pytest
from pipeline_helpers import ROOT, nas_cmd, run_dirs

import nas

ARTEFACTS = {".json", ".jsonl", ".yaml", ".parquet", ".safetensors", ".png", ".md", ".csv", ".txt"}


@pytest.mark.slow
def test_smoke_run_writes_the_run_directory(smoke_run):
    out = (smoke_run / "stdout.txt").read_text()
    # paths are shown as typed: relative to the working directory the run started in
    assert f"report: {(smoke_run / 'report.md').relative_to(smoke_run.parents[2])}" in out
    for name in (
        "config.yaml",
        "trials.jsonl",
        "trials.parquet",
        "pareto.png",
        "samples.png",
        "report.md",
        "summary.json",
        "supernet.safetensors",
    ):
        assert (smoke_run / name).is_file(), name
    summary = json.loads((smoke_run / "summary.json").read_text())
    # samples of the chosen arch beside the supernet's max, judged by the digits classifier
    assert summary["samples"] == "samples.png"
    quality = summary["sample_quality"]
    assert len(quality) == 2 and "supernet max subnet" in quality
    for metrics in quality.values():
        assert set(metrics) == {"cond_accuracy", "fid"}
        assert 0 <= metrics["cond_accuracy"] <= 1 and metrics["fid"] > 0
    report = (smoke_run / "report.md").read_text()
    assert "## Samples" in report and "![samples](samples.png)" in report
    chosen = summary["chosen"]
    export = Path(chosen["export"])
    for name in (
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "arch.json",
        "quant_plan.json",
    ):
        assert (export / name).is_file(), name
    # the chosen arch was measured end to end beside its predicted latency
    assert chosen["measured_latency_ms"] > 0 and chosen["predicted_latency_ms"] > 0
    df = nas.load_run(smoke_run)
    assert (df["state"] == "completed").sum() == 4
    assert {"val_loss", "latency_ms", "params", "bytes"} <= set(df.columns)
    # artefacts a user receives are JSON, CSV, parquet, safetensors, YAML, PNG or Markdown;
    # ray/ is Ray Tune's own experiment state (what --resume restores from)
    for p in smoke_run.rglob("*"):
        if p.is_file() and "ray" not in p.relative_to(smoke_run).parts:
            assert p.suffix in ARTEFACTS, p
    # nothing written beside the run and table directories
    assert sorted(p.name for p in smoke_run.parents[2].iterdir()) == [
        "runs",
        "smoke.yaml",
        "tables",
    ]


@pytest.mark.slow
def test_export_any_trial_and_train_it(smoke_run, tmp_path):
    from search_spaces.mobile_unet import MobileUNet

    df = nas.load_run(smoke_run)
    trial = df["id"].iloc[-1]
    r = nas_cmd(
        "export", str(smoke_run), "--trial", trial, "--out", str(tmp_path / "e"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    model = MobileUNet.from_pretrained(tmp_path / "e")
    arch = json.loads((tmp_path / "e" / "arch.json").read_text())
    assert arch["hash"] == df.set_index("id").loc[trial, "spec_hash"]
    assert arch["metrics"]["io"]["size"] == 8  # what `nas train` needs to rebuild the task
    r = nas_cmd("train", str(tmp_path / "e"), "--steps", "25", "--batch-size", "16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    hist = json.loads((tmp_path / "e" / "trained" / "train_history.json").read_text())
    assert hist["val_loss_after"] < hist["val_loss_before"]
    again = MobileUNet.from_pretrained(tmp_path / "e" / "trained")
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    # the trained model generates: a labelled grid and its quality metrics, from a relative path
    r = nas_cmd("sample", "e/trained", "--n", "20", "--steps", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "e" / "trained" / "samples.png").is_file()
    assert "cond_accuracy" in r.stdout and "fid" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "e/trained/samples.png"
    r = nas_cmd("sample", "e", "--n", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--n 0" in r.stderr


def test_export_unknown_trial_is_one_line(smoke_run, tmp_path):
    r = nas_cmd("export", str(smoke_run), "--trial", "nope", cwd=tmp_path)
    assert r.returncode == 2
    assert "has no trial 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_notebook_runs_on_the_run(smoke_run):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "experiments" / "notebooks" / "pareto.ipynb", as_version=4)
    os.environ["MQNAS_RUN"] = str(smoke_run)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        del os.environ["MQNAS_RUN"]
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 4  # front, samples, predicted vs measured, strategies compared


def test_dry_run_of_the_full_scale_experiment(tmp_path):
    r = nas_cmd(
        "search",
        str(ROOT / "experiments" / "sd15_mobile_unet_pixel8.yaml"),
        "--dry-run",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "space mobile_unet_sd15" in out and "latency keys" in out
    assert "table coverage      0/" in out and "nas latency build --space mobile_unet_sd15" in out
    assert "PFLOP" in out
    # its 8 data-parallel GPU workers: no GPU here, so the compute split, not a timed step
    assert "step not measured here: device: 'cuda'" in out
    assert "8 workers           ≈ " in out and "h of supernet training" in out
    assert not run_dirs(tmp_path)  # a dry run writes nothing
