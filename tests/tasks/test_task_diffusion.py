"""DDPM objective: the forward process, its draws and the schedules."""

from __future__ import annotations

import pytest
import torch

from nas.errors import ConfigError
from nas.tasks import DiffusionObjective


def test_add_noise_is_ddpm_forward_process_with_linear_betas():
    obj = DiffusionObjective()  # linear β from 1e-4 to 0.02 over T = 1000 (Ho et al.)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 2, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(5, 2, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 998, 999])
    want = abar[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(obj.add_noise(x0, eps, t), want.float(), rtol=1e-5, atol=1e-6)


def test_noisy_is_seeded_and_t_uniform_in_range():
    obj = DiffusionObjective()
    x0 = torch.zeros(4096, 1, 2, 2)
    a = obj.noisy(x0, torch.Generator().manual_seed(3))
    b = obj.noisy(x0, torch.Generator().manual_seed(3))
    c = obj.noisy(x0, torch.Generator().manual_seed(4))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[1], c[1])
    x_t, t, eps = a
    assert t.shape == (4096,) and t.dtype == torch.int64
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    assert int(t.min()) < 10 and int(t.max()) > 990  # covers the whole range
    assert abs(float(t.float().mean()) - 499.5) < 15  # uniform: mean (T-1)/2
    # x0 = 0: x_t is the noise scaled by sqrt(1 - abar_t)
    scale = (1 - obj.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, scale * eps)


def test_schedules_differ_and_unknown_is_refused():
    lin = DiffusionObjective(schedule="linear").alphas_cumprod
    cos = DiffusionObjective(schedule="squaredcos_cap_v2").alphas_cumprod
    assert lin.shape == cos.shape == (1000,)
    assert float((lin - cos).abs().max()) > 0.05
    with pytest.raises(ConfigError, match="squaredcos_cap_v2"):
        DiffusionObjective(schedule="cosine")
    with pytest.raises(ConfigError, match="positive"):
        DiffusionObjective(num_train_timesteps=0)


def test_evenly_spaced_timesteps():
    obj = DiffusionObjective()
    assert obj.evenly_spaced(8).tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    assert obj.evenly_spaced(1).tolist() == [500]
    with pytest.raises(ConfigError):
        obj.evenly_spaced(0)


def test_mse_takes_the_eps_half_of_a_learned_sigma_output():
    obj = DiffusionObjective()
    eps = torch.ones(2, 3, 4, 4)
    pred = torch.cat([torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), 7.0)], 1)  # (B, 2C, ...)
    assert float(obj.mse(pred, eps)) == 0.0
    assert float(obj.mse(torch.zeros(2, 3, 4, 4), eps)) == 1.0
