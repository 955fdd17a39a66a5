"""Checkpoints: safetensors + JSON only, atomic, and resuming is bit-exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_support import CrashingTask, SimulatedCrash, make_supernet, make_trainer

from nas.errors import ConfigError
from nas.training import CheckpointError

KW = {"batch_size": 4, "n_random": 1, "lr": 3e-3, "seed": 7, "progress": False}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits_for) -> Path:
    """A finished 3-step run with checkpoints at steps 2 and 3."""
    d = tmp_path_factory.mktemp("run") / "checkpoints"
    net = make_supernet(11)
    make_trainer(net, digits_for(net), steps=3, checkpoint_dir=d, checkpoint_every=2, **KW).train()
    return d


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "checkpoints"
    shutil.copytree(run_dir, dst)
    return dst


@pytest.mark.slow
def test_resume_after_a_crash_is_bitwise_equal_to_training_straight(tmp_path, digits_for):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reductions always in the same order
    try:
        with torch.random.fork_rng(devices=[]):  # the test reseeds the global RNG
            _crash_and_resume(tmp_path, digits_for)
    finally:
        torch.set_num_threads(threads)


def _crash_and_resume(tmp_path: Path, digits_for) -> None:
    n, k = 5, 2
    task = digits_for(make_supernet(0))

    # straight: N steps (validating every step: validation must not shift training)
    straight = make_supernet(0)
    ref = make_trainer(straight, task, steps=n, val_every=1, **KW)
    ref_hist = ref.train()

    # k steps with a checkpoint every k, then the job dies while fetching batch k + 1
    ckpt = tmp_path / "checkpoints"
    first = make_supernet(0)
    crashing = CrashingTask(task, crash_after=k + 1)
    t1 = make_trainer(first, crashing, steps=n, checkpoint_dir=ckpt, checkpoint_every=k, **KW)
    with pytest.raises(SimulatedCrash):
        t1.train()
    assert t1.step == k + 1  # step k + 1 ran but its checkpoint (at 2k) was never written
    assert json.loads((ckpt / "latest.json").read_text())["step"] == k
    torch.manual_seed(12345)  # a new process starts with another global RNG state
    fresh = torch.get_rng_state()

    # a new process: other initial weights, resumed from the latest checkpoint
    second = make_supernet(99)
    t2 = make_trainer(second, task, steps=n, checkpoint_dir=ckpt, checkpoint_every=k, **KW)
    assert t2.resume() == k
    saved = load_file(ckpt / f"step_{k}" / "optimizer.safetensors")["rng.torch_cpu"]
    assert torch.equal(torch.get_rng_state(), saved) and not torch.equal(saved, fresh)
    assert len(t2.history) == k
    hist = t2.train()

    ref_state, got_state = straight.state_dict(), second.state_dict()
    assert ref_state.keys() == got_state.keys()
    for name, v in ref_state.items():
        assert torch.equal(v, got_state[name]), f"{name} differs after resume"
    assert [r["loss_max"] for r in hist] == [r["loss_max"] for r in ref_hist]
    assert [r["loss_min"] for r in hist] == [r["loss_min"] for r in ref_hist]
    for p_ref, p_got in zip(ref.optimizer.param_groups[0]["params"], t2._weights):
        s_ref, s_got = ref.optimizer.state[p_ref], t2.optimizer.state[p_got]
        assert s_ref.keys() == s_got.keys()
        for key in s_ref:
            assert torch.equal(s_ref[key], s_got[key]), key


def test_checkpoint_directory_holds_only_safetensors_and_json(run_dir):
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    assert files == [
        "latest.json",
        "step_2/model.safetensors",
        "step_2/optimizer.safetensors",
        "step_2/state.json",
        "step_3/model.safetensors",
        "step_3/optimizer.safetensors",
        "step_3/state.json",
    ]
    assert json.loads((run_dir / "latest.json").read_text()) == {"step": 3, "path": "step_3"}
    for p in run_dir.rglob("*.json"):
        json.loads(p.read_text())  # strict JSON (no NaN)
    for p in run_dir.rglob("*.safetensors"):
        assert p.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, JSON header


def test_checkpoint_contents(run_dir):
    state = json.loads((run_dir / "step_3" / "state.json").read_text())
    assert state["step"] == 3
    assert state["space"] == {"name": "test_mobile_unet", "version": "1"}
    assert state["task"] == "digits"
    assert state["config"]["lr"] == KW["lr"] and state["config"]["steps"] == 3
    assert [r["step"] for r in state["history"]] == [1, 2, 3]
    assert state["rng"] == {"subnets": "per_step"}  # drawn from (seed, step): nothing to keep
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == KW["lr"] and group["betas"] == [0.9, 0.999]
    opt = load_file(run_dir / "step_3" / "optimizer.safetensors")
    assert opt["rng.torch_cpu"].dtype == torch.uint8
    assert "state.0.exp_avg" in opt and "state.0.exp_avg_sq" in opt and "state.0.step" in opt
    assert float(opt["state.0.step"]) == 3.0
    model = load_file(run_dir / "step_3" / "model.safetensors")
    net = make_supernet(0)
    assert model.keys() == net.state_dict().keys()
    assert len(state["param_names"]) == len(net.weight_parameters())


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tmp_path, digits_for):
    net = make_supernet(0)
    task = digits_for(net)
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        make_trainer(net, task, steps=1, checkpoint_dir=tmp_path / "nope", resume=True, **KW)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no 'latest.json'"):
        make_trainer(net, task, steps=1, **KW).resume(tmp_path / "empty")
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        make_trainer(net, task, steps=1, resume=True, **KW)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "step_3" / "model.safetensors").write_bytes(b"\0" * 64), "sha256"),
        (lambda d: (d / "step_3" / "optimizer.safetensors").unlink(), "lacks optimizer"),
        (lambda d: (d / "step_3" / "state.json").write_text('{"step": 3,'), "not valid JSON"),
        (lambda d: (d / "latest.json").write_text("step_3"), "not a JSON pointer"),
        (lambda d: shutil.rmtree(d / "step_3"), "does not exist"),
    ],
    ids=["corrupt-model", "missing-optimizer", "torn-state", "bad-latest", "dangling-latest"],
)
def test_corrupt_checkpoint_is_a_clear_error(run_dir, tmp_path, digits_for, damage, match):
    d = _copy(run_dir, tmp_path)
    damage(d)
    net = make_supernet(0)
    trainer = make_trainer(net, digits_for(net), steps=3, **KW)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        trainer.resume(d)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # untouched
    assert trainer.step == 0


def test_resume_with_another_config_or_space_is_a_config_error(run_dir, digits_for):
    net = make_supernet(0)
    task = digits_for(net)
    other = {**KW, "lr": 1e-2, "n_random": 2}
    with pytest.raises(ConfigError, match=r"n_random: checkpoint 1 vs trainer 2.*lr"):
        make_trainer(net, task, steps=3, **other).resume(run_dir)
    attn = make_supernet(0, "test_mobile_unet_attn")
    with pytest.raises(ConfigError, match="test_mobile_unet_attn"):
        make_trainer(attn, digits_for(attn), steps=3, **KW).resume(run_dir)
    # length and cadence may change: resuming with more steps continues the run
    longer = make_trainer(net, task, steps=4, checkpoint_every=100, val_every=0, **KW)
    assert longer.resume(run_dir) == 3
    assert [r["step"] for r in longer.train()] == [1, 2, 3, 4]


def test_resume_true_continues_and_clears_a_torn_write(run_dir, tmp_path, digits_for):
    d = _copy(run_dir, tmp_path)
    torn = d / ".step_4.x1y2"  # what a crash in the middle of writing step 4 leaves
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0")
    net = make_supernet(0)
    trainer = make_trainer(
        net, digits_for(net), steps=4, checkpoint_dir=d, checkpoint_every=2, resume=True, **KW
    )
    assert trainer.step == 3
    trainer.train()
    assert not torn.exists()
    assert json.loads((d / "latest.json").read_text()) == {"step": 4, "path": "step_4"}
    # the two latest are kept (keep_checkpoints=2)
    assert sorted(p.name for p in d.iterdir()) == ["latest.json", "step_3", "step_4"]


def test_only_the_latest_checkpoints_are_kept(tmp_path):
    from nas.training.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint

    w = {"w": torch.arange(3.0)}
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, w, {}, {"note": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_3", "step_4"]
    assert read_checkpoint(latest_checkpoint(tmp_path)).step == 4
    write_checkpoint(tmp_path, 5, w, {}, {}, keep=None)  # None keeps everything
    assert len(list(tmp_path.glob("step_*"))) == 3
