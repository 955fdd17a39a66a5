"""OneShotSearch: one backward updates weights and logits, warm-up, PTQ, λ and the result."""

from __future__ import annotations

import math

import pytest
import torch
from policy_helpers import TinyDenoising, make_net

from nas import ConfigError
from nas.policies import quantizer_parameters
from nas.strategies.oneshot import OneShotResult, OneShotSearch, OneShotSettings, latency_penalty
from nas.tasks import DigitsDenoising


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def _search(unet_cost, frac=0.15, **kw):
    net = make_net()
    kw = {"steps": 1, "batch_size": 2, **kw}
    target = frac * float(unet_cost.predict([net.space.max()])[0])
    return net, OneShotSearch(net, TinyDenoising(net), unet_cost, OneShotSettings(target, **kw))


def test_one_joint_step_updates_weights_and_every_arch_parameter(unet_cost):
    net, search = _search(unet_cost, lam=1.0)
    always = ("conv_in.", "down_blocks.0.resnets.0.", "mid_block.", "conv_out.")  # every path runs
    weights = [p for n, p in net.named_parameters() if n.startswith(always)]
    arch = search.policy.arch_parameters()
    w0, a0 = _snapshot(weights), _snapshot(arch)
    res = search.run(progress=False)
    assert all(_changed(w0, weights)) and all(_changed(a0, arch))
    h = res.history[0]
    assert set(h) >= {"step", "task_loss", "expected_latency_ms", "lam"} and h["lam"] == 1.0
    assert net.arch_parameters() == []  # detached after the run


def test_warmup_freezes_the_logits_but_trains_the_weights(unet_cost):
    net, search = _search(unet_cost, steps=2, warmup_steps=2, lam=10.0)
    weights = net.weight_parameters()
    arch = search.policy.arch_parameters()
    w0, a0 = _snapshot(weights), _snapshot(arch)
    res = search.run(progress=False)
    assert not any(_changed(a0, arch))
    assert sum(_changed(w0, weights)) > len(weights) // 2
    assert [h["warmup"] for h in res.history] == [1.0, 1.0]


def test_ptq_mode_learns_only_logits_and_quantizer_parameters(unet_cost):
    net, search = _search(unet_cost, mode="ptq", steps=2)
    assert search.policy.masks is None and search.policy.depth is None  # quant only by default
    quant = quantizer_parameters(net)
    qids = {id(p) for p in quant}
    others = [p for p in net.parameters() if id(p) not in qids]
    q0, o0, a0 = _snapshot(quant), _snapshot(others), _snapshot(search.policy.arch_parameters())
    search.run(progress=False)
    assert not any(_changed(o0, others))
    assert any(_changed(q0, quant)) and all(_changed(a0, search.policy.arch_parameters()))
    assert all(p.requires_grad for p in net.parameters())  # flags restored


@pytest.mark.slow
def test_expected_latency_falls_as_lambda_rises(unet_cost):
    finals = {}
    for lam in (0.0, 1.0, 10.0):
        _, search = _search(unet_cost, lam=lam, steps=4, lr_arch=0.05, arch_optimizer="sgd", seed=0)
        finals[lam] = search.run(progress=False).expected_latency_ms
    assert finals[0.0] > finals[1.0] > finals[10.0], finals
    assert finals[0.0] - finals[10.0] > 0.2 * finals[0.0]


def test_result_is_a_valid_extractable_sample_and_latency_falls(unet_cost):
    net, search = _search(unet_cost, frac=0.3, lam=5.0, steps=6, warmup_steps=1, lr_arch=0.1)
    res = search.run(progress=False)
    assert isinstance(res, OneShotResult) and len(res.history) == 6
    assert net.space.validate(res.sample) == res.sample
    assert res.sample_latency_ms == pytest.approx(float(unet_cost.predict([res.sample])[0]))
    assert res.history[-1]["expected_latency_ms"] < res.history[0]["expected_latency_ms"]
    out = net.extract(res.sample)(**net.example_inputs(2)).sample
    assert torch.isfinite(out).all()


def test_lambda_schedules_and_penalties():
    e = torch.tensor(3.0)
    assert latency_penalty(e, 2.0, "hinge").item() == pytest.approx(0.5)
    assert latency_penalty(torch.tensor(1.0), 2.0, "hinge").item() == 0.0
    assert latency_penalty(torch.tensor(1.0), 2.0, "log").item() == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(ConfigError, match="penalty"):
        latency_penalty(e, 2.0, "square")


def test_linear_and_auto_lambda(unet_cost):
    _, lin = _search(unet_cost, lam=2.0, lam_schedule="linear", steps=4, warmup_steps=2)
    assert [lin.lam_at(t) for t in range(4)] == [0.0, 0.0, 1.0, 2.0]
    _, auto = _search(unet_cost, frac=0.05, lam=0.0, lam_schedule="auto", lam_lr=0.5, steps=2)
    res = auto.run(progress=False)
    assert res.history[0]["lam"] == 0.0 and res.history[1]["lam"] > 0.0  # above target: λ grows


def test_bad_arguments_are_config_errors(unet_cost):
    net = make_net()
    task = TinyDenoising(net)
    for kw, msg in (
        ({"target_ms": 0.0}, "target_ms"),
        ({"target_ms": 1.0, "mode": "qat"}, "mode"),
        ({"target_ms": 1.0, "steps": 2, "warmup_steps": 3}, "warmup_steps"),
        ({"target_ms": 1.0, "lam_schedule": "cosine"}, "lam_schedule"),
        ({"target_ms": 1.0, "arch_optimizer": "lbfgs"}, "arch_optimizer"),
    ):
        with pytest.raises(ConfigError, match=msg):
            OneShotSearch(net, task, unet_cost, OneShotSettings(**kw))


def test_runs_with_the_digits_task(unet_cost):
    net = make_net()
    task = DigitsDenoising.for_model(net)
    settings = OneShotSettings(1.0, steps=2, batch_size=4)
    res = OneShotSearch(net, task, unet_cost, settings).run(progress=False)
    assert all(math.isfinite(h["task_loss"]) for h in res.history)
    assert math.isfinite(task.validate(net.extract(res.sample))["val_loss"])


def test_expected_latency_prices_unsearched_labels_at_the_policy_base(unet_cost):
    # a quant-only search of one fixed (min) structure: E[T] must be that structure's latency
    net = make_net()
    base = net.space.min()
    settings = OneShotSettings(
        1.0, steps=1, batch_size=2, search=("quant",), policy_kwargs={"base": base}
    )
    search = OneShotSearch(net, TinyDenoising(net), unet_cost, settings)
    with search.policy:
        e = float(search.expected_cost().detach())
    lo = float(unet_cost.predict([base])[0])
    hi = float(
        unet_cost.predict(
            [{**base, **{k: v for k, v in net.space.max().items() if k.endswith(".quant")}}]
        )[0]
    )
    assert lo - 1e-9 <= e <= hi + 1e-9
    assert e < float(unet_cost.predict([net.space.default()])[0])


def test_sampled_discretization_lands_within_tolerance_of_the_target(unet_cost):
    net, search = _search(unet_cost, frac=0.5, discretize="sampled", tolerance=0.05)
    res = search.run(progress=False)
    target = search.target_ms
    assert abs(res.sample_latency_ms / target - 1) <= 0.05 or res.sample == res.argmax_sample
    net.space.validate(res.sample)


def test_scored_discretization_returns_the_best_supernet_score_of_the_most_probable(unet_cost):
    net, search = _search(unet_cost, frac=0.5, discretize="scored", tolerance=0.05, n_scored=4)
    scored: list[tuple[dict, float]] = []
    validate = search.task.validate

    def recording(model):  # the real validation, remembering which sub-network it scored
        out = validate(model)
        scored.append((dict(model.active_sample), out["val_loss"]))
        return out

    search.task.validate = recording
    res = search.run(progress=False)
    assert abs(res.sample_latency_ms / search.target_ms - 1) <= 0.05
    assert 1 <= len(scored) <= 4
    best = min(scored, key=lambda x: x[1])[0]
    assert net.space.canonical(best) == net.space.canonical(res.sample)
