"""OneShotSettings from the config, the cost-model contract and the one-shot registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from policy_helpers import TinyDenoising, make_net

from nas import ConfigError
from nas.config import OneShotConfig
from nas.strategies import ONESHOT, OneShotSearch, OneShotSettings
from nas.strategies.oneshot import OneShotCostModel, PredictingCostModel


class _Flat:
    """E[T] without a table: a constant, with the protocol's `default` accepted."""

    def expected(self, probs, default=None):
        return torch.ones((), dtype=torch.float64)


def test_the_config_section_converts_whole():
    section = OneShotConfig(target_ms=3.0, steps=5, warmup_steps=1, policies=["dqss", "depth"])
    s = section.settings(batch_size=4, seed=7)
    assert (s.target_ms, s.steps, s.warmup_steps, s.batch_size, s.seed) == (3.0, 5, 1, 4, 7)
    assert s.lam_schedule == "auto" and s.lr_arch == 0.05  # the section's defaults, not ours
    assert s.kinds == ("quant", "depth")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 6  # type: ignore[misc]


def test_settings_default_kinds_follow_the_mode_and_copy_their_inputs():
    assert OneShotSettings(1.0).kinds == ("quant", "width", "depth")
    assert OneShotSettings(1.0, mode="ptq").kinds == ("quant",)
    kwargs = {"mask_tau": 0.2}
    s = OneShotSettings(1.0, search=["width"], policy_kwargs=kwargs, lam_schedule=lambda t: 2.0)
    kwargs["mask_tau"] = 0.5
    assert s.search == ("width",) and s.policy_kwargs == {"mask_tau": 0.2}


def test_cost_models_are_checked_against_the_protocol(unet_cost):
    assert isinstance(unet_cost, PredictingCostModel)
    assert isinstance(_Flat(), OneShotCostModel) and not isinstance(_Flat(), PredictingCostModel)
    net = make_net()
    task = TinyDenoising(net)
    with pytest.raises(ConfigError, match="has no expected"):
        OneShotSearch(net, task, object(), OneShotSettings(1.0))
    with pytest.raises(ConfigError, match="needs a cost model with predict"):
        OneShotSearch(net, task, _Flat(), OneShotSettings(1.0, discretize="sampled"))
    with pytest.raises(TypeError, match="OneShotSettings"):
        OneShotSearch(net, task, unet_cost, 1.0)  # type: ignore[arg-type]


def test_the_registered_differentiable_search_runs(unet_cost):
    assert ONESHOT.names() == ["differentiable"]
    net = make_net()
    settings = OneShotSettings(1.0, lam=0.0, steps=1, batch_size=2, search=("quant",))
    res = ONESHOT.get("differentiable")(net, TinyDenoising(net), _Flat(), settings, progress=False)
    assert len(res.history) == 1 and res.expected_latency_ms == 1.0
    assert set(res.trace()) == {
        "sample",
        "expected_latency_ms",
        "sample_latency_ms",
        "probabilities",
        "history",
    }
