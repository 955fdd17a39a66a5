"""Depth: family units, exact single-path forward, straight-through gradients, sampling."""

from __future__ import annotations

import pytest
import torch
from policy_helpers import make_net

from nas.policies import DifferentiablePolicy, depth_units


@pytest.mark.parametrize("name", ["test_mobile_unet", "test_mobile_unet_attn"])
def test_depth_units_name_real_modules_and_depth_labels(name):
    net = make_net(name)
    units = depth_units(net)
    assert units, name
    for u in units:
        assert u.min_value in net.space[u.label].options
        assert u.min_value > net.space[u.label].options[0]  # the smallest option removes it
    labels = {u.label for u in units}
    assert labels == {
        lab
        for lab in net.space.labels
        if lab.endswith((".depth", ".attn")) and len(net.space[lab]) > 1
    }


def test_units_run_exactly_when_the_sample_keeps_them():
    net = make_net("test_mobile_unet_attn")
    units = depth_units(net)
    x = net.example_inputs(1)
    for s in [net.space.max(), *net.space.sample_many(6, rng=3)]:
        ran = set()
        handles = [
            net.get_submodule(u.path).register_forward_hook(
                lambda m, a, o, p=u.path, ran=ran: ran.add(p) if not torch.equal(o, a[0]) else None
            )
            for u in units
        ]
        try:
            with net.activate(s):
                net(**x)
        finally:
            for h in handles:
                h.remove()
        for u in units:
            # a unit "ran" when it changed its input; a removed one is skipped or identity
            if s[u.label] < u.min_value:
                assert u.path not in ran, (u, s[u.label])
        if s == net.space.max():
            assert ran == {u.path for u in units}


@pytest.mark.parametrize("name", ["test_mobile_unet", "test_mobile_unet_attn"])
def test_gated_forward_equals_the_sampled_subnetwork_and_grads_reach_logits(name):
    net = make_net(name)
    x = net.example_inputs(2)
    pol = DifferentiablePolicy(net, search=("depth",))
    deep = pol.structure_sample({lab: net.space[lab].options[-1] for lab in pol.depth.labels})
    g = torch.Generator().manual_seed(0)
    for s in [deep, *(pol.sample_structure(g) for _ in range(3))]:
        with net.activate(s):
            want = net(**x).sample
        with pol, net.activate(s):
            got = net(**x).sample
        assert torch.equal(got, want)  # the gate's forward value is exactly 1
    with pol, net.activate(deep):
        net(**x).sample.pow(2).mean().backward()
    for lab, logits in zip(pol.depth.labels, pol.depth.logits):
        assert logits.grad is not None and logits.grad.abs().sum() > 0, lab


def test_unexecuted_units_give_no_task_gradient():
    net = make_net()
    pol = DifferentiablePolicy(net, search=("depth",))
    shallow = pol.structure_sample({lab: net.space[lab].options[0] for lab in pol.depth.labels})
    with pol, net.activate(shallow):
        net(**net.example_inputs(2)).sample.pow(2).mean().backward()
    for lab, logits in zip(pol.depth.labels, pol.depth.logits):
        assert logits.grad is None or logits.grad.abs().sum() == 0, lab


def test_sampling_follows_the_categorical_and_argmax_is_deterministic():
    net = make_net()
    pol = DifferentiablePolicy(net, search=("depth",))
    lab = "stage.0.depth"
    with torch.no_grad():
        pol.depth.logits[pol.depth.labels.index(lab)].copy_(torch.tensor([0.0, 2.0]))
    g = torch.Generator().manual_seed(0)
    draws = [pol.sample_structure(g)[lab] for _ in range(400)]
    p_deep = torch.sigmoid(torch.tensor(2.0)).item()
    assert draws.count(2) / 400 == pytest.approx(p_deep, abs=0.06)
    assert pol.argmax_structure()[lab] == 2 and pol.discretize()[lab] == 2
    # ties go to the deeper option
    assert pol.discretize()["stage.1.depth"] == 2
