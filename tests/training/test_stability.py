"""Stable supernet training: seeded init, skipped non-finite steps, rollbacks, warm-up.

Non-finite values are injected the way they arise for real: one sub-network's output
turns NaN (a forward hook on the head, the trainer untouched), which without the skip
would poison every weight through the shared gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from training_support import SPACE, CrashingTask, SimulatedCrash, make_supernet, make_trainer

from nas.app.build import build_supernet
from nas.app.spaces import space_entry
from nas.config import parse_config
from nas.errors import ConfigError, MqnasError
from nas.supernet import Supernet
from nas.training import SupernetTrainer
from nas.training.sandwich import TrainingDivergedError

KW = {"batch_size": 2, "n_random": 1, "lr": 3e-3, "seed": 5, "progress": False}
#: forward passes per step with n_random=1: max, min, one random student
MAX, MIN, RAND = 0, 1, 2


def poison(net: Supernet, bad: Callable[[int, int], bool]) -> None:
    """Make the head's output NaN on the forwards where bad(step index, forward index).

    The step index is read from the trainer set as ``net._trainer`` (0-based: the step
    being computed); the forward index counts the forwards within that step.
    """
    state = {"step": -1, "i": 0}

    def hook(_module, _inputs, out):
        step = net._trainer.step  # type: ignore[attr-defined]
        if step != state["step"]:
            state["step"], state["i"] = step, 0
        i = state["i"]
        state["i"] += 1
        return out * float("nan") if bad(step, i) else out

    net.conv_out.register_forward_hook(hook)


def trainer(net: Supernet, task, **kw) -> SupernetTrainer:
    t = make_trainer(net, task, **{**KW, **kw})
    net._trainer = t  # type: ignore[attr-defined]
    return t


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


# -- seeded initialisation ----------------------------------------------------------------
def _cfg(seed: int):
    return parse_config({"name": "x", "space": SPACE, "seed": seed}, "test.yaml")


def test_build_supernet_is_seeded_and_leaves_the_global_rng_alone():
    cfg0, cfg1 = _cfg(0), _cfg(1)
    entry = space_entry(cfg0.space)
    before = torch.get_rng_state()
    a, b, c = build_supernet(cfg0, entry), build_supernet(cfg0, entry), build_supernet(cfg1, entry)
    assert torch.equal(torch.get_rng_state(), before)
    assert_same_state(a.state_dict(), b.state_dict())
    sa, sc = a.state_dict(), c.state_dict()
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_supernet_steps_true_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"supernet\.steps"):
        parse_config({"name": "x", "space": SPACE, "supernet": {"steps": True}}, "t.yaml")
    with pytest.raises(ConfigError, match=r"supernet\.warmup_steps"):
        parse_config({"name": "x", "space": SPACE, "supernet": {"warmup_steps": 1.5}}, "t.yaml")
    s = parse_config({"name": "x", "space": SPACE}, "t.yaml").supernet
    assert (s.grad_clip, s.warmup_steps, s.max_bad_steps) == (1.0, 10, 3)


# -- non-finite steps ----------------------------------------------------------------------
def test_a_non_finite_student_is_skipped_and_changes_nothing(digits_for, caplog):
    task = digits_for(make_supernet(0))
    clean = make_supernet(0)
    ref = trainer(clean, task, steps=1)
    ref.train()

    net = make_supernet(0)
    poison(net, lambda step, i: step == 1 and i == RAND)  # step 2's random student
    t = trainer(net, task, steps=2)
    with caplog.at_level("WARNING", logger="nas.training.sandwich"):
        hist = t.train()
    assert [r["skipped"] for r in hist] == [False, True]
    assert {"loss_rand1", "distill_rand1", "grad_norm"} <= set(hist[1]["nonfinite"])
    assert math.isfinite(hist[1]["loss_max"]) and math.isfinite(hist[1]["loss_min"])
    assert any("step 2: non-finite loss_rand1" in r.message for r in caplog.records)
    # weights and AdamW moments are those after step 1: step 2 applied nothing
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())
    assert_same_state(clean.state_dict(), net.state_dict())
    for p_ref, p in zip(ref._weights, t._weights):
        assert_same_state(ref.optimizer.state[p_ref], t.optimizer.state[p])
    assert all(p.grad is None for p in t._weights)


def test_bad_steps_in_a_row_roll_back_with_the_lr_halved(digits_for, caplog):
    net = make_supernet(1)
    # steps 5 and 6 fail on the original trajectory only (as a too high lr would)
    poison(net, lambda step, i: step in (4, 5) and not net._trainer.rollbacks and i == MAX)
    t = trainer(net, digits_for(net), steps=6, checkpoint_every=2, max_bad_steps=2)
    with caplog.at_level("WARNING", logger="nas.training.sandwich"):
        hist = t.train()
    lr = KW["lr"]
    assert [r["step"] for r in hist] == [1, 2, 3, 4, 5, 6]
    assert not any(r["skipped"] for r in hist)  # the replayed steps 5, 6 went through
    assert [r["lr"] for r in hist] == [lr] * 4 + [lr / 2] * 2
    assert [r["rollbacks"] for r in hist] == [0] * 4 + [1] * 2
    assert t.lr_scale == 0.5
    (event,) = t.rollbacks
    assert event["step"] == 6 and event["to_step"] == 4
    assert [s["step"] for s in event["skipped"]] == [5, 6]
    msg = "step 6: 2 non-finite steps in a row (loss_max=nan, distill_min=nan"
    assert any(r.message.startswith(msg) for r in caplog.records)
    assert any(
        f"rolling back to step 4 with lr {lr:.3g} → {lr / 2:.3g} (rollback 1/3)" in r.message
        for r in caplog.records
    )


def test_training_that_stays_non_finite_gives_up_with_a_clear_error(digits_for):
    net = make_supernet(2)
    poison(net, lambda step, i: step >= 1 and i == MIN)
    t = trainer(net, digits_for(net), steps=20, max_bad_steps=1, max_rollbacks=2)
    with pytest.raises(TrainingDivergedError, match="Lower supernet.lr") as e:
        t.train()
    assert isinstance(e.value, MqnasError)
    assert "after 2 rollbacks" in str(e.value) and "loss_min=nan" in str(e.value)
    assert len(t.rollbacks) == 2 and t.lr_scale == 0.25
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())


# -- warm-up -------------------------------------------------------------------------------
def test_linear_warm_up(digits_for):
    net = make_supernet(3)
    t = trainer(net, digits_for(net), steps=5, n_random=0, lr=1e-3, warmup_steps=4)
    hist = t.train()
    assert [r["lr"] for r in hist] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert t.lr_at(0) == pytest.approx(2.5e-4) and t.lr_at(100) == pytest.approx(1e-3)
    assert make_trainer(net, digits_for(net), steps=1).lr_at(0) == 1e-3  # default: none
    with pytest.raises(ConfigError, match="warmup_steps"):
        make_trainer(net, digits_for(net), steps=1, warmup_steps=-1)


# -- resume ----------------------------------------------------------------------------------
def test_resume_after_a_rollback_is_exact(tmp_path: Path, digits_for):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reductions always in the same order
    try:
        with torch.random.fork_rng(devices=[]):
            _resume_after_rollback(tmp_path, digits_for)
    finally:
        torch.set_num_threads(threads)


def _resume_after_rollback(tmp_path: Path, digits_for) -> None:
    n = 8
    task = digits_for(make_supernet(0))
    kw = {"steps": n, "checkpoint_every": 2, "max_bad_steps": 2, "warmup_steps": 3}

    def bad_for(net: Supernet) -> Callable[[int, int], bool]:
        return lambda step, i: step in (4, 5) and not net._trainer.rollbacks and i == RAND

    straight = make_supernet(4)
    poison(straight, bad_for(straight))
    ref = trainer(straight, task, **kw)
    ref_hist = ref.train()
    assert len(ref.rollbacks) == 1

    # rollback at step 6 → back to 4 → steps 5, 6 again (checkpoint 6) → dies fetching step 8
    ckpt = tmp_path / "checkpoints"
    first = make_supernet(4)
    poison(first, bad_for(first))
    t1 = trainer(first, CrashingTask(task, crash_after=7), checkpoint_dir=ckpt, **kw)
    with pytest.raises(SimulatedCrash):
        t1.train()

    second = make_supernet(99)  # a new process: other initial weights
    poison(second, bad_for(second))
    t2 = trainer(second, task, checkpoint_dir=ckpt, **kw)
    assert t2.resume() == 6
    assert t2.lr_scale == 0.5 and t2._good.step == 6
    assert [(e["step"], e["to_step"]) for e in t2.rollbacks] == [(6, 4)]
    hist = t2.train()
    assert_same_state(straight.state_dict(), second.state_dict())
    assert [r["loss_max"] for r in hist] == [r["loss_max"] for r in ref_hist]
    assert [r["lr"] for r in hist] == [r["lr"] for r in ref_hist]
    for p_ref, p in zip(ref._weights, t2._weights):
        assert_same_state(ref.optimizer.state[p_ref], t2.optimizer.state[p])


def test_resume_from_a_checkpoint_written_mid_streak_rolls_back_as_far(tmp_path, digits_for):
    """A checkpoint taken between bad steps points at the older one a rollback returns to."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            task = digits_for(make_supernet(0))
            kw = {"steps": 6, "checkpoint_every": 2, "max_bad_steps": 2}

            def bad_for(net: Supernet) -> Callable[[int, int], bool]:
                return lambda step, i: step in (3, 4) and not net._trainer.rollbacks and i == MIN

            straight = make_supernet(6)
            poison(straight, bad_for(straight))
            ref = trainer(straight, task, **kw)
            ref.train()
            assert [(e["step"], e["to_step"]) for e in ref.rollbacks] == [(5, 2)]

            ckpt = tmp_path / "checkpoints"
            first = make_supernet(6)
            poison(first, bad_for(first))
            t1 = trainer(first, CrashingTask(task, crash_after=4), checkpoint_dir=ckpt, **kw)
            with pytest.raises(SimulatedCrash):  # dies fetching step 5, after step 4's checkpoint
                t1.train()

            second = make_supernet(98)
            poison(second, bad_for(second))
            t2 = trainer(second, task, checkpoint_dir=ckpt, **kw)
            assert t2.resume() == 4
            assert t2.bad_streak == 1 and t2._good.step == 2
            t2.train()
            assert [(e["step"], e["to_step"]) for e in t2.rollbacks] == [(5, 2)]
            assert_same_state(straight.state_dict(), second.state_dict())
    finally:
        torch.set_num_threads(threads)
