"""The combined policy: attach / detach, arch parameters, gradients, discrete samples."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from policy_helpers import make_net

from nas import ConfigError
from nas.policies import DifferentiablePolicy, depth_units


def test_attach_registers_arch_parameters_and_detach_restores_the_supernet():
    net = make_net()
    x = net.example_inputs(2)
    before = net(**x).sample
    n_weights = len(net.weight_parameters())
    pol = DifferentiablePolicy(net)
    assert net.arch_parameters() == []
    with pol:
        ids = {id(p) for p in net.arch_parameters()}
        assert ids == {id(p) for p in pol.parameters()} and len(ids) == 5
        assert len(net.weight_parameters()) == n_weights  # arch params are not module params
        assert not ids & {id(p) for p in net.parameters()}
        with pytest.raises(ConfigError, match="already has a policy"):
            DifferentiablePolicy(net, search=("quant",)).attach()
        with net.activate(pol.structure_sample()):
            assert not torch.equal(net(**x).sample, before)  # uniform quant mixture runs
    assert net.arch_parameters() == []
    assert torch.equal(net(**x).sample, before)
    assert all(getattr(m, "quant_mix", None) is None for m in net.modules())


def test_gradients_reach_every_arch_parameter_with_the_latency_term(unet_cost):
    net = make_net()
    pol = DifferentiablePolicy(net)
    with pol:
        # a deep path: every depth unit runs, so the task term reaches every depth logit too
        deep = {lab: net.space[lab].options[-1] for lab in pol.depth.labels}
        with net.activate(pol.structure_sample(deep)):
            task = net(**net.example_inputs(2, seed=1)).sample.pow(2).mean()
        (task + unet_cost.expected(pol.probabilities()) / 10).backward()
    for p in pol.arch_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    # every quant label's logits row and every mask entry got a gradient
    assert (pol.quant.logits[0].grad.abs().sum(1) > 0).all()
    assert (pol.masks.frac.grad != 0).all()


def test_expected_latency_of_the_policy_matches_the_table_at_one_hot_states(unet_cost):
    net = make_net()
    pol = DifferentiablePolicy(net)
    big = 1e4
    with torch.no_grad():  # push every categorical to its last option, masks stay at max
        pol.quant.logits[0].fill_(0.0)
        pol.quant.logits[0][:, -1] = big
        for lg in pol.depth.logits:
            lg.fill_(0.0)
            lg[-1] = big
    e = unet_cost.expected(pol.probabilities()).item()
    assert e == pytest.approx(float(unet_cost.predict([net.space.max()])[0]), rel=1e-6)
    assert pol.discretize() == net.space.canonical(net.space.max())


def test_discrete_sample_is_valid_extractable_and_follows_the_parameters():
    net = make_net()
    pol = DifferentiablePolicy(net)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pol.quant.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        pol.masks.frac.copy_(torch.rand(pol.masks.frac.shape, generator=gen))
        for p in pol.depth.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    pol.project()
    s = pol.discretize()
    assert net.space.validate(s) == s and net.space.canonical(s) == s
    assert s != net.space.canonical(net.space.max())
    for lab in pol.quant.labels:
        if s[lab] != net.space.default()[lab]:  # canonicalized labels keep their default
            g, r, _ = pol.quant._where[lab]
            assert net.space[lab].options.index(s[lab]) == int(pol.quant.logits[g][r].argmax())
    model = net.extract(s)
    out = model(**net.example_inputs(2)).sample
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_unknown_search_kind_and_missing_depth_hook_are_config_errors():
    net = make_net()
    with pytest.raises(ConfigError, match="cannot search"):
        DifferentiablePolicy(net, search=("quant", "ops"))
    with pytest.raises(ConfigError, match="depth_units"):
        depth_units(SimpleNamespace(space=net.space))


def test_dit_family_runs_every_kind_and_discretizes():
    """DiT: DQSS exact as for any supernet; width masks approximate (see nas.policies.pas)."""
    dit = make_net("test_mobile_dit")
    pol = DifferentiablePolicy(dit)
    assert {"width", "depth", "blocks.0.heads", "blocks.1.mlp_ratio"} <= set(pol.labels())
    deep = pol.structure_sample({"depth": dit.space["depth"].options[-1]})
    with pol, dit.activate(deep):
        dit(**dit.example_inputs(2)).sample.pow(2).mean().backward()
    for p in pol.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    with torch.no_grad():
        pol.masks.frac.fill_(0.0)
    pol.project()
    s = pol.discretize()
    assert s["width"] == dit.space["width"].options[0]
    out = dit.extract(s)(**dit.example_inputs(2)).sample
    assert torch.isfinite(out).all()
