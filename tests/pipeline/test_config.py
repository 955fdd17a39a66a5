"""Experiment configs: every shipped YAML validates; bad input is one line naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.config import dump_config, load_config, parse_config, schema_reference
from nas.errors import ConfigError

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_validate_and_round_trip(path):
    cfg = load_config(path)
    again = parse_config(yaml.safe_load(dump_config(cfg)), "dumped")
    assert again == cfg


def _base(**extra):
    return {"name": "x", "space": "test_mobile_unet", **extra}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_base(bogus=1), "unknown key 'bogus'; allowed here: budgets, device"),
        (_base(search={"kindd": "sample"}), "unknown key 'search.kindd'; allowed here: evaluator"),
        (
            _base(search={"kind": "grid"}),
            "key 'search.kind': Input should be 'sample' or 'oneshot'",
        ),
        (_base(search={"num_trials": "many"}), "key 'search.num_trials'"),
        (_base(budgets={"latency": 3}), "key 'budgets.latency'"),
        ({"space": "x"}, "key 'name' is required"),
        (_base(search={"kind": "oneshot"}), "search.oneshot (with target_ms) is required"),
        (
            _base(search={"kind": "oneshot", "oneshot": {"target_ms": 5, "calibrate_steps": 9}}),
            "search.oneshot.calibrate_steps=9 needs mode: ptq",
        ),
        (_base(task={"kind": "image_folder"}), "task.path is required"),
        (_base(supernet={"steps": -1}), "key 'supernet.steps'"),
    ],
)
def test_bad_configs_name_the_key(doc, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(doc, "exp.yaml")
    msg = str(e.value)
    assert msg.startswith("exp.yaml: ") and expected in msg
    assert "\n" not in msg


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a mapping of keys"):
        load_config(bad)


def test_reference_lists_every_leaf_key_and_the_readme_carries_it():
    ref = schema_reference()
    for key in ("`search.finetune.steps`", "`latency.backend`", "`ray.address`", "`budgets`"):
        assert key in ref
    readme = (EXPERIMENTS.parent / "README.md").read_text()
    assert ref in readme, "README's config reference is stale: paste nas.config.schema_reference()"


def test_cli_reports_bad_config_in_one_line_exit_2(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text(yaml.safe_dump(_base(search={"strategy": "random", "num_trialz": 3})))
    r = subprocess.run(
        [sys.executable, "-m", "nas.app.cli", "search", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'search.num_trialz'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    exp = tmp_path / "exp" / "e.yaml"
    exp.write_text(
        yaml.safe_dump(
            _base(
                runs_dir="out/runs",
                latency={"root": "tables"},
                supernet={"teacher": "~/teacher"},
                task={"distill": {"teacher": "supernet_max"}},
            )
        )
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("exp/e.yaml")
    # the working directory of the command, not the YAML's folder: what the README types
    assert cfg.runs_dir == str(tmp_path / "out" / "runs")
    assert cfg.latency.root == str(tmp_path / "tables")
    assert cfg.supernet.teacher == str(Path("~/teacher").expanduser())
    assert cfg.task.distill.teacher == "supernet_max"  # a name, not a path
    # the resolved config round-trips unchanged from anywhere (what a run stores)
    monkeypatch.chdir(tmp_path / "exp")
    assert (
        load_config(exp) == load_config(exp).model_copy()
        and parse_config(yaml.safe_load(dump_config(cfg))) == cfg
    )


def test_a_run_directory_is_absolute_whatever_the_working_directory(tmp_path, monkeypatch):
    from nas.runs import RunDir, shown

    monkeypatch.chdir(tmp_path)
    run = RunDir.create(parse_config(_base(runs_dir="runs")))
    assert run.path.is_absolute() and run.path.parent == tmp_path / "runs" / "x"
    assert RunDir.open(run.path.relative_to(tmp_path)).path == run.path
    assert shown(run.path) == str(run.path.relative_to(tmp_path))
    monkeypatch.chdir(tmp_path / "runs")
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_the_ray_section_converts_whole_into_the_ray_settings():
    import dataclasses

    from nas.config import RayConfig
    from nas.ray_tune import RaySettings

    section = RayConfig(num_cpus=3, asha=True)
    assert dataclasses.asdict(RaySettings(**section.model_dump())) == {
        **section.model_dump(),
        "asha_max_t": RaySettings.asha_max_t,
    }
