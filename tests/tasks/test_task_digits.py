"""Digits denoising: data, conditioning, seeded batches, deterministic validation, training."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from tasks_helpers import SMALL, supernet

from nas.errors import ConfigError
from nas.tasks import DenoiserIO, DigitsDenoising
from search_spaces.mobile_dit import MobileDiTConfig, make_space, make_supernet


def test_images_are_resized_repeated_and_in_range():
    task = DigitsDenoising(DenoiserIO(channels=3, size=16, context_len=None, context_dim=None))
    assert len(task) == 1797
    assert task.num_val == 180 and task.num_train == 1617
    x = task.split("train")["x0"]
    assert x.shape == (1617, 3, 16, 16)
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    # sklearn's 0…16 pixels → [-1, 1], bilinear ×2 (half-pixel centres)
    raw = torch.as_tensor(load_digits().images, dtype=torch.float32)[:, None] / 8 - 1
    want = F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:, :1], want[task.train_index])
    assert "context" not in task.split("val")


def test_split_is_fixed_disjoint_and_seeded(unet_digits):
    io = unet_digits.io
    again = DigitsDenoising(io, **SMALL)
    other = DigitsDenoising(io, seed=1, **SMALL)
    assert torch.equal(again.val_index, unet_digits.val_index)
    assert not torch.equal(other.val_index, unet_digits.val_index)
    both = torch.cat([unet_digits.train_index, unet_digits.val_index])
    assert torch.equal(both.sort().values, torch.arange(1797))


def test_class_contexts_are_fixed_distinct_and_unit_variance(unet_digits):
    table = unet_digits.class_contexts
    assert table.shape == (10, 3, 8)  # test_mobile_unet: context_len 3, cross_attention_dim 8
    assert not table.requires_grad
    flat = table.flatten(1)
    dist = torch.cdist(flat, flat) + torch.eye(10) * 1e9
    assert float(dist.min()) > 1.0  # every pair of classes differs clearly
    assert 0.7 < float(table.std()) < 1.3 and abs(float(table.mean())) < 0.3
    assert torch.equal(DigitsDenoising(unet_digits.io, **SMALL).class_contexts, table)
    assert not torch.equal(DigitsDenoising(unet_digits.io, seed=5).class_contexts, table)
    b = next(unet_digits.batches(32, seed=0))
    assert b["x0"].shape == (32, 1, 8, 8) and b["label"].shape == (32,)
    assert b["context"].shape == (32, 3, 8)
    assert torch.equal(b["context"], table[b["label"]])


def test_batches_are_reproducible_from_the_seed_and_cover_each_epoch(unet_digits):
    def first(seed: int, n: int = 3, bs: int = 16) -> list[dict]:
        return list(itertools.islice(unet_digits.batches(bs, seed=seed), n))

    a, b, c = first(0), first(0), first(1)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["x0"], c[0]["x0"])
    # one epoch = a permutation of the training split; the next epoch reshuffles
    n = unet_digits.num_train
    e1, e2 = itertools.islice(unet_digits.batches(n, seed=0), 2)
    train = unet_digits.split("train")
    key = lambda x: x.flatten(1).sum(1).sort().values
    assert torch.equal(key(e1["x0"]), key(train["x0"]))
    assert torch.equal(e1["label"].sort().values, train["label"].sort().values)
    assert not torch.equal(e1["label"], e2["label"])
    # a batch larger than the training split is filled from the next epoch
    assert next(unet_digits.batches(n + 5, seed=0))["x0"].shape[0] == n + 5


def test_validate_is_deterministic_and_restores_modes(unet, unet_digits):
    unet.train()
    unet.mid_block.eval()  # a mixed-mode model keeps its modes
    v1 = unet_digits.validate(unet)
    v2 = unet_digits.validate(unet)
    assert set(v1) == {"val_loss"} and isinstance(v1["val_loss"], float)
    assert v1 == v2
    assert unet.training and not unet.mid_block.training and unet.conv_in.training
    # a fresh task with the same seed gives the same number
    assert DigitsDenoising(unet_digits.io, **SMALL).validate(unet) == v1
    # a different model, or another sub-network of this one, gives another number
    assert unet_digits.validate(supernet("test_mobile_unet", seed=1)) != v1
    with unet.activate(unet.space.min()):
        assert unet_digits.validate(unet) != v1
    assert all(p.grad is None for p in unet.parameters())


def test_training_lowers_the_validation_loss_unet(unet, unet_digits):
    before = unet_digits.validate(unet)["val_loss"]
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batches = unet_digits.batches(16, seed=0)
    with unet.activate(unet.space.max()):
        for _ in range(30):
            loss = unet_digits.loss(unet, next(batches), gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = unet_digits.validate(unet)["val_loss"]
    assert after < 0.7 * before, (before, after)


def test_dit_loss_is_a_scalar_that_trains(dit):
    task = DigitsDenoising.for_model(dit, **SMALL)
    assert task.io == DenoiserIO(channels=1, size=8, context_len=2, context_dim=16)
    batch = next(task.batches(8, seed=0))
    loss = task.loss(dit, batch, torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert dit.proj_out.weight.grad is not None and dit.proj_out.weight.grad.abs().sum() > 0
    before = task.validate(dit)["val_loss"]
    opt = torch.optim.Adam(dit.parameters(), lr=1e-3)
    batches, gen = task.batches(16, seed=0), torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        task.loss(dit, next(batches), gen).backward()
        opt.step()
    assert task.validate(dit)["val_loss"] < 0.8 * before


def test_models_without_cross_attention_get_no_context():
    cfg = MobileDiTConfig(
        sample_size=8, in_channels=1, cross_attention=False, widths=(16,), depths=(1,), heads=(1,)
    )
    torch.manual_seed(0)
    net = make_supernet(cfg, make_space(cfg, "dit_no_context"))
    task = DigitsDenoising.for_model(net, **SMALL)
    assert task.io.context_len is None and task.class_contexts is None
    batch = next(task.batches(4, seed=0))
    assert set(batch) == {"x0", "label"}
    assert torch.isfinite(task.loss(net, batch))
    assert task.validate(net) == task.validate(net)


def test_bad_arguments_are_config_errors(unet_digits):
    with pytest.raises(ConfigError, match="val_fraction"):
        DigitsDenoising(unet_digits.io, val_fraction=1.0)
    with pytest.raises(ConfigError, match="schedule"):
        DigitsDenoising(unet_digits.io, schedule="cosine")
    with pytest.raises(ConfigError, match="batch_size"):
        next(unet_digits.batches(0, seed=0))
    with pytest.raises(ConfigError, match="example_inputs"):
        DigitsDenoising.for_model(torch.nn.Linear(2, 2))
