"""Sandwich-rule supernet training on the digits task with the tiny U-Net space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from training_support import make_supernet, make_trainer

from nas.errors import ConfigError
from nas.tasks.base import Task
from nas.tasks.distill import DistillationTask
from nas.training.util import step_generator


@pytest.mark.slow
def test_sandwich_lowers_validation_loss_of_max_and_min(digits_for):
    net = make_supernet(0)
    task = digits_for(net)
    trainer = make_trainer(
        net, task, steps=16, batch_size=16, n_random=1, lr=2e-3, seed=0, progress=False
    )
    before = trainer.validate()
    history = trainer.train()
    after = trainer.validate()
    assert [r["step"] for r in history] == list(range(1, 17))
    # at init ε-prediction is no better than predicting 0 (val_loss ≈ E ε² = 1); 16 steps
    # learn enough of the digits to do far better (measured: ≈ 0.30 max, ≈ 0.45 min)
    assert before["max/val_loss"] > 0.8 and before["min/val_loss"] > 0.8
    assert after["max/val_loss"] < 0.5 * before["max/val_loss"], (before, after)
    assert after["min/val_loss"] < 0.65 * before["min/val_loss"], (before, after)
    assert after["max/val_loss"] < after["min/val_loss"]  # the larger sub-network is better
    # the trained loss fell too (mean of the last 4 vs the first 4 steps)
    first = np.mean([r["loss_max"] for r in history[:4]])
    last = np.mean([r["loss_max"] for r in history[-4:]])
    assert last < first


def test_every_sub_network_sees_the_same_noisy_input(digits_for):
    """Step 1's max and min losses equal the task's own loss with step 1's generator.

    The optimizer steps once, after the whole sandwich, so both sub-networks are
    scored at the initial weights; equality means both saw the noise the
    (seed, step 0) generator draws — the same input.
    """
    net = make_supernet(1)
    task = digits_for(net)
    space = net.space
    batch = next(iter(task.batches(8, 3, "cpu")))
    expected = {}
    with torch.no_grad():
        for name, sample in (("max", space.max()), ("min", space.min())):
            with net.activate(sample):
                expected[name] = float(task.loss(net, batch, step_generator(3, 0)))
    trainer = make_trainer(net, task, steps=1, batch_size=8, n_random=1, seed=3, progress=False)
    (rec,) = trainer.train()
    assert rec["loss_max"] == pytest.approx(expected["max"], rel=1e-6)
    assert rec["loss_min"] == pytest.approx(expected["min"], rel=1e-6)
    assert rec["loss_max"] != pytest.approx(rec["loss_min"], rel=1e-3)  # distinct sub-networks
    assert rec["distill"] > 0 and rec["loss_rand"] is not None


def test_gradients_reach_weight_parameters_only(digits_for):
    net = make_supernet(2)
    task = digits_for(net)
    # an architecture parameter on the forward path (as a differentiable policy's gate is)
    net.alpha = nn.Parameter(torch.zeros(()))
    net.conv_out.register_forward_hook(lambda _m, _i, out: out * (1 + net.alpha))
    net.arch_parameters = lambda: [net.alpha]  # type: ignore[method-assign]
    assert all(p is not net.alpha for p in net.weight_parameters())
    with net.activate(net.space.max()):  # the gate does receive gradient outside the trainer
        task.loss(net, next(iter(task.batches(4, 0))), step_generator(0, 0)).backward()
    assert net.alpha.grad is not None
    net.alpha.grad = None
    w0 = net.conv_in.weight.detach().clone()

    trainer = make_trainer(net, task, steps=2, batch_size=4, n_random=1, progress=False)
    trainer.train()
    assert net.alpha.grad is None
    assert float(net.alpha.detach()) == 0.0
    assert net.alpha.requires_grad  # restored after each step
    assert not torch.equal(net.conv_in.weight, w0)  # while the weights did train
    assert all(p is not net.alpha for g in trainer.optimizer.param_groups for p in g["params"])


def test_validation_hook_and_history(digits_for, caplog):
    net = make_supernet(3)
    trainer = make_trainer(
        net,
        digits_for(net),
        steps=2,
        batch_size=4,
        n_random=0,
        val_every=2,
        log_every=1,
        progress=False,
    )
    with caplog.at_level("INFO", logger="nas.training.sandwich"):
        h = trainer.train()
    assert set(h[0]) == {
        "step",
        "loss_max",
        "loss_min",
        "loss_rand",
        "distill",
        "lr",
        "grad_norm",
        "skipped",
        "nonfinite",
        "rollbacks",
        "seconds",
    }
    assert h[0]["skipped"] is False and h[0]["nonfinite"] == {} and h[0]["rollbacks"] == 0
    assert h[0]["loss_rand"] is None  # n_random=0
    assert "max/val_loss" in h[1] and "min/val_loss" in h[1]
    assert "max/val_loss" not in h[0]
    assert any("validation at step 2" in r.message for r in caplog.records)
    assert trainer.train() is h  # already at `steps`: nothing more to do


def test_device_argument_is_honoured(digits_for):
    net = make_supernet(4)
    trainer = make_trainer(
        net, digits_for(net), steps=1, batch_size=2, n_random=0, device="cpu", progress=False
    )
    assert trainer.device == torch.device("cpu")
    trainer.train()
    assert {p.device for p in net.parameters()} == {torch.device("cpu")}
    state = trainer.optimizer.state[trainer.optimizer.param_groups[0]["params"][0]]
    assert state["exp_avg"].device == torch.device("cpu")


class _NoNoise(Task):
    name = "no_noise"

    def batches(self, batch_size, seed, device="cpu"):
        while True:
            yield {"x0": torch.zeros(batch_size, 1, 8, 8)}

    def loss(self, model, batch, generator=None):
        return torch.zeros(())

    def validate(self, model):
        return {"val_loss": 0.0}


def test_tasks_that_cannot_share_noise_or_distil_externally_are_refused(digits_for):
    net = make_supernet(5)
    with pytest.raises(ConfigError, match="noisy"):
        make_trainer(net, _NoNoise(), steps=1)
    teacher = DistillationTask(digits_for(net), net)
    with pytest.raises(ConfigError, match="base task"):
        make_trainer(net, teacher, steps=1)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1, "batch_size": 0}, "batch_size"),
        ({"steps": 1, "n_random": -2}, "n_random"),
        ({"steps": 1, "lr": 0.0}, "lr"),
        ({"steps": 1, "grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_bad_config_is_a_config_error(digits_for, kwargs, word):
    net = make_supernet(6)
    with pytest.raises(ConfigError, match=word):
        make_trainer(net, digits_for(net), **kwargs)
