"""PTQ calibration of learned quantizers, and OneShotSearch's calibrate-then-search mode."""

from __future__ import annotations

import pytest
import torch
from policy_helpers import TinyDenoising, make_net

from nas import ConfigError
from nas.policies import quantizer_parameters
from nas.strategies.oneshot import OneShotSearch, OneShotSettings
from nas.training.calibrate import calibrate_quantizers, calibrate_strategies


def _uniform(net, scheme: str) -> dict:
    return dict(net.space.max(), **dict.fromkeys(net.quant_paths, scheme))


def _values(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def test_calibration_trains_only_the_quantizers_the_sample_runs():
    net = make_net()
    task = TinyDenoising(net)
    lsq = [p for n, p in net.named_parameters() if n.endswith(("wq_lsq", "aq_lsq"))]
    rest = [p for p in net.parameters() if all(p is not q for q in lsq)]
    lsq0, rest0 = _values(lsq), _values(rest)

    history = calibrate_quantizers(net, task, _uniform(net, "w4a8:lsq"), steps=2, batch_size=2)
    assert [h["step"] for h in history] == [1, 2]
    assert not any(torch.equal(a, p.detach()) for a, p in zip(lsq0, lsq[:4]))
    assert all(torch.equal(a, p.detach()) for a, p in zip(rest0, rest))
    assert all(p.requires_grad for p in net.parameters())  # frozen only inside

    lsq1 = _values(lsq)  # minmax learns nothing: no step taken, nothing moves
    assert calibrate_quantizers(net, task, _uniform(net, "w8a8:minmax"), steps=2) == []
    assert all(torch.equal(a, p.detach()) for a, p in zip(lsq1, lsq))


def test_calibrate_then_search_assigns_the_calibrated_quantizers(unet_cost):
    net = make_net()
    target = 0.5 * float(unet_cost.predict([net.space.max()])[0])
    kw = {"steps": 2, "batch_size": 2, "lr_w": 1e-2, "seed": 0}
    settings = OneShotSettings(target, mode="ptq", calibrate_steps=2, **kw)
    search = OneShotSearch(net, TinyDenoising(net), unet_cost, settings)
    arch0 = _values(search.policy.arch_parameters())
    search.run(progress=False)

    # the same calibration alone, on an identical supernet: the search moved no quantizer
    ref = make_net()
    losses = calibrate_strategies(
        ref,
        TinyDenoising(ref),
        search.policy.base,
        search.policy.quant.labels,
        steps=2,
        batch_size=2,
        lr=1e-2,
        seed=0,
    )
    assert set(losses) == {"w4a8:lsq", "w4a16:minmax", "w8a8:minmax", "w8a8:lsq", "fp16", "fp32"}
    assert losses["fp32"] != losses["fp32"] and losses["w8a8:lsq"] > 0  # NaN: nothing learned
    calibrated = quantizer_parameters(ref)
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in calibrated)
    for p, q in zip(quantizer_parameters(net), calibrated):
        assert torch.equal(p.detach(), q.detach())
    assert all(
        not torch.equal(a, p.detach()) for a, p in zip(arch0, search.policy.arch_parameters())
    )


def test_calibrate_steps_needs_ptq(unet_cost):
    net = make_net()
    with pytest.raises(ConfigError, match="calibrate_steps .* mode='ptq'"):
        OneShotSearch(net, TinyDenoising(net), unet_cost, OneShotSettings(1.0, calibrate_steps=2))
