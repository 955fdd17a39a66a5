"""Run directories, exports and teachers a user was sent: ids that would leave the run, and
weight files that would be unpickled, are refused with one line that says what to fix."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces an export names)
from nas import SPACES, ConfigError, ExportError, export, load_exported
from nas.app.cli import main
from nas.config import load_config
from nas.runs import RunDir
from nas.trials import Trial, TrialStore, safe_trial_id, trial_dir

ROOT = Path(__file__).parents[1]
TRAVERSAL = "../../../x"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _record(trial_id: str) -> dict:
    return {
        "id": trial_id,
        "sample": {},
        "spec_hash": "h",
        "metrics": {"val_loss": 0.5},
        "cost": {"latency_ms": 1.0},
        "state": "completed",
        "timings": {},
        "provenance": {},
        "error": None,
        "created": 1.0,
    }


def _run(tmp_path: Path, *ids: str) -> RunDir:
    """A run directory as `nas search` lays it out, its trials.jsonl written by hand."""
    run = RunDir.create(load_config(ROOT / "experiments" / "smoke.yaml"), root=tmp_path / "runs")
    lines = [json.dumps(_record(i)) for i in ids]
    (run.path / "trials.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


# -- trial ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "good", ["70ffac67", "70ffac67_00001", "1a2b3_00012", uuid.uuid4().hex[:12], "t0", "a.b-c"]
)
def test_ids_that_ray_tune_and_the_evaluators_make_are_safe(good):
    assert safe_trial_id(good) == good


@pytest.mark.parametrize(
    "bad", [TRAVERSAL, "..", "a/b", "a\\b", ".hidden", "-rf", "", "a..b", "x" * 129, "a b", 7]
)
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(ConfigError, match="is not allowed.*names the directory export/<id>/"):
        safe_trial_id(bad)


def test_a_crafted_record_names_the_file_line_and_id(tmp_path):
    run = _run(tmp_path, "t0", TRAVERSAL)
    with pytest.raises(ConfigError) as e:
        TrialStore(run.path).trials()
    msg = str(e.value)
    assert f"{run.path / 'trials.jsonl'}, line 2:" in msg
    assert repr(TRAVERSAL) in msg and "fix or delete that line" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="is not allowed"):
        Trial.from_json(_record("a/b"))


def test_export_dir_of_a_trial_stays_inside_the_run(tmp_path):
    run = _run(tmp_path, "t0")
    assert trial_dir(run.export_dir, "t0", inside=run.path) == run.export_dir / "t0"
    with pytest.raises(ConfigError, match="is not allowed"):
        trial_dir(run.export_dir, TRAVERSAL, inside=run.path)
    outside = tmp_path / "outside"
    outside.mkdir()
    run.export_dir.symlink_to(outside)  # a run directory someone else made
    with pytest.raises(ConfigError, match="outside .*remove the link or pass --out DIR"):
        trial_dir(run.export_dir, "t0", inside=run.path)


# -- `nas export` through the CLI ----------------------------------------------------------------
def _export(capsys, run: RunDir, trial: str) -> tuple[int, list[str]]:
    code = main(["export", str(run.path), "--trial", trial])
    return code, capsys.readouterr().err.strip().splitlines()


def test_export_refuses_a_traversal_trial_and_writes_nothing(tmp_path, capsys):
    run = _run(tmp_path, "t0")
    before = _files(tmp_path)
    code, err = _export(capsys, run, TRAVERSAL)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("nas: error: --trial: trial id '../../../x' is not allowed")
    assert _files(tmp_path) == before


def test_export_refuses_a_run_whose_trials_jsonl_is_crafted(tmp_path, capsys):
    run = _run(tmp_path, "t0", TRAVERSAL)
    (run.supernet_weights).write_bytes(b"")  # the checks come before the supernet loads
    before = _files(tmp_path)
    for trial in ("t0", TRAVERSAL):
        code, err = _export(capsys, run, trial)
        assert code == 2 and len(err) == 1, err
        assert repr(TRAVERSAL) in err[0] and "is not allowed" in err[0]
    assert "trials.jsonl, line 2" in _export(capsys, run, "t0")[1][0]
    assert _files(tmp_path) == before
    assert not (tmp_path / "runs" / "x").exists()


def test_export_refuses_an_export_dir_linked_outside_the_run(tmp_path, capsys):
    run = _run(tmp_path, "t0")
    run.supernet_weights.write_bytes(b"")
    outside = tmp_path / "outside"
    outside.mkdir()
    run.export_dir.symlink_to(outside)
    code, err = _export(capsys, run, "t0")
    assert code == 2 and len(err) == 1 and "outside" in err[0] and "--out DIR" in err[0]
    assert list(outside.iterdir()) == []


# -- weights: safetensors only -------------------------------------------------------------------
class _Tripwire:
    """Unpickling this creates `marker`: the proof that a file was (not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_export_with_pickled_weights_is_not_unpickled(tmp_path):
    net = SPACES.get("test_mobile_unet").supernet()
    out = export(net, net.space.max(), tmp_path / "e")
    (out / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (out / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))
    with pytest.raises(ExportError) as e:
        load_exported(out)
    msg = str(e.value)
    assert "only as diffusion_pytorch_model.bin" in msg and "nas export RUN --trial ID" in msg
    assert not marker.exists()


def _unet_teacher(path: Path, safe: bool) -> Path:
    from diffusers import UNet2DConditionModel

    from search_spaces.mobile_unet import TEST_MOBILE_UNET, diffusers_config

    UNet2DConditionModel(**diffusers_config(TEST_MOBILE_UNET)).save_pretrained(
        path, safe_serialization=safe
    )
    return path


def test_a_teacher_saved_as_a_torch_pickle_is_refused(tmp_path):
    from nas.app.build import load_teacher_model
    from search_spaces.mobile_unet import TEST_MOBILE_UNET, MobileUNetSupernet

    teacher = _unet_teacher(tmp_path / "t", safe=False)
    assert [p.name for p in teacher.glob("*.bin")] == ["diffusion_pytorch_model.bin"]
    with pytest.raises(ConfigError) as e:
        MobileUNetSupernet(TEST_MOBILE_UNET).load_teacher(teacher)
    msg = str(e.value)
    assert msg.startswith("supernet.teacher: ") and "only as diffusion_pytorch_model.bin" in msg
    assert "save_pretrained(dir, safe_serialization=True)" in msg
    with pytest.raises(ConfigError, match="^task.distill.teacher: .*does not unpickle"):
        load_teacher_model(str(teacher), "cpu")


def test_a_safetensors_teacher_still_loads_for_distillation(tmp_path):
    from nas.app.build import load_teacher_model

    model = load_teacher_model(str(_unet_teacher(tmp_path / "t", safe=True)), "cpu")
    assert type(model).__name__ == "UNet2DConditionModel" and not model.training


@pytest.mark.parametrize("content", [b'{"_class_name": "UNet2DConditionModel",', b"\xff\xfe{}"])
def test_a_broken_teacher_config_names_the_key_and_the_file(tmp_path, content):
    from nas.app.build import load_teacher_model
    from search_spaces.mobile_unet import TEST_MOBILE_UNET, MobileUNetSupernet

    teacher = _unet_teacher(tmp_path / "t", safe=True)
    (teacher / "config.json").write_bytes(content)
    for key, load in (
        ("supernet.teacher", lambda: MobileUNetSupernet(TEST_MOBILE_UNET).load_teacher(teacher)),
        ("task.distill.teacher", lambda: load_teacher_model(str(teacher), "cpu")),
    ):
        with pytest.raises(ConfigError) as e:
            load()
        msg = str(e.value)
        assert msg.startswith(f"{key}: {teacher / 'config.json'} is not valid UTF-8 JSON"), msg
        assert "save_pretrained(dir)" in msg and "\n" not in msg


def test_a_vae_saved_as_a_torch_pickle_is_refused(tmp_path):
    from diffusers import AutoencoderKL

    from nas.tasks.image_folder import load_vae

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4).save_pretrained(
        tmp_path / "vae", safe_serialization=False
    )
    with pytest.raises(ConfigError, match="cannot load an AutoencoderKL.*safetensors"):
        load_vae(tmp_path / "vae")
