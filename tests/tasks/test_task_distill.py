"""Distillation (BK-SDM output + feature KD): zero for the teacher itself, positive for a
smaller sub-network, gradients only into the student."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from tasks_helpers import SMALL

from nas.errors import ConfigError
from nas.tasks import DigitsDenoising, DistillationTask
from nas.tasks.distill import teacher_slice


def terms(task: DistillationTask, model, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = next(task.base.batches(8, seed=seed))
    return task.terms(model, batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("same_object", [True, False])
def test_teacher_itself_gives_zero_kd_terms(unet, unet_digits, same_object):
    teacher = unet if same_object else copy.deepcopy(unet)
    task = DistillationTask(unet_digits, teacher)
    with unet.activate(unet.space.max()):
        t = terms(task, unet)
    assert float(t["out_kd"]) == 0.0 and float(t["feat_kd"]) == 0.0
    assert float(t["task"]) > 0
    torch.testing.assert_close(t["loss"].detach(), t["task"])


def test_smaller_student_gets_positive_terms_and_only_it_gets_gradients(unet, unet_digits):
    teacher = copy.deepcopy(unet)
    task = DistillationTask(unet_digits, teacher, out_weight=0.5, feat_weight=2.0)
    small = unet.space.min()
    with unet.activate(small):
        t = terms(task, unet)
        t["loss"].backward()
    assert float(t["out_kd"]) > 0 and float(t["feat_kd"]) > 0
    torch.testing.assert_close(
        t["loss"].detach(), t["task"] + 0.5 * t["out_kd"] + 2.0 * t["feat_kd"]
    )
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in unet.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert teacher.training == unet.training


def test_in_place_distillation_restores_the_student_sample(unet, unet_digits):
    task = DistillationTask(unet_digits, unet)  # the supernet's max sub-network teaches
    small = unet.space.canonical(unet.space.min())
    unet.train()
    with unet.activate(small):
        t = terms(task, unet)
        assert unet.active_sample == small and unet.training
        t["loss"].backward()
        # the KD terms' gradient is that of a fixed (detached) target: recompute it by hand
        ref = DistillationTask(unet_digits, copy.deepcopy(unet))
    assert float(t["out_kd"]) > 0 and float(t["feat_kd"]) > 0
    with unet.activate(small):
        t2 = terms(ref, unet)
    torch.testing.assert_close(t2["out_kd"], t["out_kd"])
    torch.testing.assert_close(t2["feat_kd"], t["feat_kd"])


def test_features_compare_the_block_outputs(unet, unet_digits):
    # a changed conv_out (after every compared block) moves only the output term
    head = copy.deepcopy(unet)
    with torch.no_grad():
        head.conv_out.weight.add_(0.1)
    with unet.activate(unet.space.max()):
        t = terms(DistillationTask(unet_digits, head), unet)
    assert float(t["out_kd"]) > 0 and float(t["feat_kd"]) == 0.0
    # a changed mid block moves the features too; feat_weight 0 drops them
    mid = copy.deepcopy(unet)
    with torch.no_grad():
        mid.mid_block.resnets[0].conv1.weight.add_(0.1)
    with unet.activate(unet.space.max()):
        assert float(terms(DistillationTask(unet_digits, mid), unet)["feat_kd"]) > 0
        off = terms(DistillationTask(unet_digits, mid, feat_weight=0.0), unet)
    assert float(off["feat_kd"]) == 0.0 and float(off["out_kd"]) > 0


def test_absent_modules_are_skipped_and_logged_once(unet, unet_digits, caplog):
    teacher = copy.deepcopy(unet)
    with torch.no_grad():
        teacher.mid_block.resnets[0].conv1.weight.add_(0.1)
    only_mid = DistillationTask(unet_digits, teacher, feature_modules=["mid_block"])
    with_missing = DistillationTask(
        unet_digits, teacher, feature_modules=["mid_block", "no_such.block"]
    )
    with caplog.at_level(logging.DEBUG, logger="nas.tasks.distill"):
        a = terms(only_mid, unet)
        b = terms(with_missing, unet)
        terms(with_missing, unet, seed=1)
    torch.testing.assert_close(a["feat_kd"], b["feat_kd"])
    assert float(a["feat_kd"]) > 0
    hits = [r for r in caplog.records if "no_such.block" in r.getMessage()]
    assert len(hits) == 1


def test_dit_student_compares_first_token_channels(dit):
    task = DistillationTask(DigitsDenoising.for_model(dit, **SMALL), dit)
    space = dit.space
    narrow = dict(space.max(), width=min(space["width"].options))
    with dit.activate(narrow):
        t = terms(task, dit)
    assert float(t["out_kd"]) > 0 and float(t["feat_kd"]) > 0


def test_callable_teacher_gives_output_kd_only(unet, unet_digits):
    task = DistillationTask(unet_digits, lambda x, t, c: torch.zeros_like(x))
    batch = next(unet_digits.batches(8, seed=0))
    t = task.terms(unet, batch, torch.Generator().manual_seed(0))
    from nas.tasks import denoise

    x_t, ts, _ = unet_digits.objective.noisy(batch["x0"], torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = denoise(unet, x_t, ts, batch["context"])
    torch.testing.assert_close(t["out_kd"], out.square().mean())
    assert float(t["feat_kd"]) == 0.0


def test_teacher_slice_takes_leading_channels():
    s, t = torch.zeros(2, 3, 4, 4), torch.arange(2 * 5 * 16.0).view(2, 5, 4, 4)
    assert torch.equal(teacher_slice(s, t), t[:, :3])
    tok_s, tok_t = torch.zeros(2, 16, 8), torch.randn(2, 16, 12)
    assert torch.equal(teacher_slice(tok_s, tok_t), tok_t[..., :8])
    assert teacher_slice(torch.zeros(2, 3, 2, 2), t) is None  # other resolution
    assert teacher_slice(torch.zeros(2, 6, 4, 4), t) is None  # wider student


def test_delegation_and_errors(unet, unet_digits):
    task = DistillationTask(unet_digits, unet)
    assert task.validate(unet) == unet_digits.validate(unet)
    a, b = next(task.batches(4, seed=3)), next(unet_digits.batches(4, seed=3))
    assert torch.equal(a["x0"], b["x0"])
    with pytest.raises(ConfigError, match="denoising base task"):
        DistillationTask(object(), unet)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not callable"):
        DistillationTask(unet_digits, "teacher/dir")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="feat_weight"):
        DistillationTask(unet_digits, unet, feat_weight=-1)
