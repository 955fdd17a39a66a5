"""The run's report is rendered from a typed `RunSummary`, and ``summary.json`` keeps its keys."""

import dataclasses
import json

from nas.app.report import ExportedArch, RunSummary, render_report


def _summary() -> RunSummary:
    exports = tuple(
        ExportedArch(
            trial=f"t{i}",
            arch=f"arch{i}",
            val_loss=0.1 + i,
            predicted_latency_ms=5.0 + i,
            measured_latency_ms=None if i else 4.5,
            params=1e6,
            bytes=2e6,
            export=f"/runs/x/export/t{i} dir",
        )
        for i in range(2)
    )
    return RunSummary(
        experiment="x",
        space="mobile_unet",
        search="`tpe` (sample)",
        evaluator="finetune",
        latency_table="`onnxruntime` on `cpu-x86_64`",
        budgets={"latency_ms": 8.0},
        objectives={"val_loss": "min", "latency_ms": "min"},
        trials=5,
        front=({"id": "t0", "val_loss": 0.1, "latency_ms": 5.0}, {"id": "t1", "val_loss": 1.1}),
        exports=exports,
        trials_file="/runs/x/trials.parquet",
    )


def test_summary_json_has_the_documented_keys():
    doc = json.loads(json.dumps(_summary().to_json()))
    assert set(doc) == {
        "experiment",
        "trials",
        "front",
        "chosen",
        "exports",
        "samples",
        "sample_quality",
    }
    assert doc["samples"] is None  # no grid drawn
    assert doc["front"] == 2 and doc["trials"] == 5
    assert doc["chosen"] == doc["exports"][0]
    assert doc["chosen"]["train_command"] == "nas train '/runs/x/export/t0 dir' --steps 1000"
    fields = {f.name for f in dataclasses.fields(ExportedArch)} | {"train_command"}
    assert set(doc["chosen"]) == fields
    assert {"trial", "arch", "val_loss", "predicted_latency_ms", "measured_latency_ms"} <= fields


def test_report_shows_the_chosen_arch_the_exports_and_the_front():
    text = render_report(_summary())
    assert text.startswith("# x: search report")
    assert "predicted 5.000 ms, measured end to end 4.500 ms" in text
    assert "| `t1` | 1.1 | 6.000 | — | 1,000,000 |" in text  # not measured: a dash
    assert "| trial | val_loss | latency_ms |" in text
    assert "| `t1` | 1.1 | — |" in text  # a front row without latency
    assert "![pareto](pareto.png)" in text
    assert "Trials: `/runs/x/trials.parquet`" in text


def test_report_shows_the_samples_and_their_quality():
    s = dataclasses.replace(
        _summary(),
        samples="samples.png",
        sample_quality={"chosen t0": {"cond_accuracy": 0.5, "fid": 12.0}, "max": {}},
    )
    text = render_report(s)
    assert "## Samples" in text and "![samples](samples.png)" in text
    assert "- chosen t0: cond_accuracy 0.5, fid 12" in text
    assert "- max: no metrics" in text
    assert "## Samples" not in render_report(_summary())


def test_report_shows_a_quality_objective_beside_the_loss():
    base = _summary()
    exports = tuple(
        dataclasses.replace(e, scores={"fid": 40.0 + i}) for i, e in enumerate(base.exports)
    )
    s = dataclasses.replace(
        base,
        objectives={"fid": "min", "latency_ms": "min"},
        front=({"id": "t0", "fid": 40.0, "val_loss": 0.1, "latency_ms": 5.0},),
        exports=exports,
    )
    text = render_report(s)
    assert "- fid: 40" in text
    assert "| trial | fid | val_loss | predicted ms |" in text
    assert "| `t1` | 41 | 1.1 | 6.000 |" in text
    assert "| trial | fid | latency_ms | val_loss |" in text  # the objectives lead the front
    assert json.loads(json.dumps(s.to_json()))["chosen"]["scores"] == {"fid": 40.0}
