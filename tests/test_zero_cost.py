"""The jacov zero-cost proxy: the score by hand, and on sub-networks of a real supernet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import search_spaces  # noqa: F401  (registers test_mobile_unet)
from nas.errors import ConfigError
from nas.supernet import get_space
from nas.tasks.base import DenoiserIO
from nas.tasks.digits import DigitsDenoising
from nas.zero_cost import JacovProxy, K, jacov


def test_uncorrelated_jacobians_score_minus_b_and_correlated_ones_far_less():
    b = 4
    ortho = torch.zeros(b, 2 * b)  # rows with disjoint support, zero-mean: correlation 0
    for i in range(b):
        ortho[i, 2 * i], ortho[i, 2 * i + 1] = 1.0, -1.0
    assert jacov(ortho) == pytest.approx(-b * (math.log(1 + K) + 1 / (1 + K)), rel=1e-9)
    same = torch.randn(1, 8).repeat(b, 1) + 1e-3 * torch.randn(b, 8)
    assert jacov(same) < jacov(ortho) - 100  # near-identical maps: near-zero eigenvalues


@pytest.fixture(scope="module")
def net_and_task():
    torch.manual_seed(0)
    net = get_space("test_mobile_unet").supernet(device="cpu")
    return net, DigitsDenoising(DenoiserIO.of(net), seed=0, val_images=4, val_timesteps=1)


def test_the_proxy_is_seeded_finite_and_tells_subnets_apart(net_and_task):
    net, task = net_and_task
    space = net.space
    samples = [space.min(), space.max(), space.sample(rng=1)]
    a = JacovProxy(net, task, batch_size=8, seed=0)(samples)
    b = JacovProxy(net, task, batch_size=8, seed=0)(samples)
    assert a.shape == (3,) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert np.all(a >= math.log(8) - 1e-9)  # −s ≥ B
    assert len(np.unique(np.round(a, 6))) > 1
    assert all(p.grad is None for p in net.parameters())  # no gradient left on the weights


def test_bad_inputs_are_refused_naming_the_fix(net_and_task):
    net, task = net_and_task
    with pytest.raises(ConfigError, match="≥ 2 inputs"):
        JacovProxy(net, task, batch_size=1)
    with pytest.raises(ConfigError, match="diffusion task"):
        JacovProxy(net, object())
