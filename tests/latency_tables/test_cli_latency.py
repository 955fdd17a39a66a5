"""`nas latency build | coverage | show | validate` end to end (torch backend, tiny space)."""

from __future__ import annotations

import json

from latency_tables.calibration import Calibration
from nas.app.cli import main

SPACE = "test_mobile_dit"
OPTS = ["--backend", "torch", "--device", "host"]
SPEED = ["--threads", "1", "--warmup", "1", "--runs", "3"]


def test_latency_commands(tmp_path, capsys):
    tables = ["--tables", str(tmp_path)]
    # no table yet: coverage says how to measure
    assert main(["latency", "show", *OPTS, *tables]) == 2
    assert "nas latency build --device host --backend torch" in capsys.readouterr().err
    assert main(["latency", "build", "--space", SPACE, *OPTS, *tables, *SPEED]) == 0
    assert "0 failed" in capsys.readouterr().out
    assert main(["latency", "coverage", "--space", SPACE, *OPTS, *tables]) == 0
    out = capsys.readouterr().out
    n = int(out.split(":")[1].split("/")[0])
    assert f"{n}/{n} keys" in out
    # another space of the same family needs keys this table lacks
    assert (
        main(["latency", "coverage", "--space", "mobile_dit", *OPTS, *tables, "--limit", "2"]) == 1
    )
    out = capsys.readouterr().out
    assert out.count("missing ") == 2 and "nas latency build --space mobile_dit" in out
    assert main(["latency", "show", *OPTS, *tables]) == 0
    out = capsys.readouterr().out
    assert '"schema_version": 2' in out and "dit_block" in out and "keys measured" in out
    validate = ["latency", "validate", "--space", SPACE, *OPTS, *tables, *SPEED, "--n", "8"]
    assert main([*validate, "--searched", "3", "--rounds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["searched"]["n"] == 3 and report["random"]["n"] == 8
    for part in (
        report["raw"],
        report["calibrated_loo"],
        report["searched"]["raw"],
        report["searched"]["calibrated"],
    ):
        assert set(part) == {
            "mape_pct",
            "within_5pct",
            "within_10pct",
            "kendall_tau",
            "spearman",
        }
        assert part["mape_pct"] >= 0
    files = report["files"]
    assert any(f.endswith(".png") for f in files)
    cal = Calibration.load(next(f for f in files if f.endswith("calibration.json")))
    assert cal.n_fit == 8 and cal.scale != 0


def test_experiment_yaml_names_the_space(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("space: nope\n")
    assert main(["latency", "coverage", "--space", str(exp), *OPTS, "--tables", str(tmp_path)]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
