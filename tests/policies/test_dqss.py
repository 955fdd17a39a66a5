"""DQSS mixing: one convolution over the mixed weight vs K convolutions, gradients, labels."""

from __future__ import annotations

import pytest
import torch
from policy_helpers import make_net

from nas.policies import (
    DifferentiablePolicy,
    QuantStrategyMixing,
    k_path_forward,
    product_mixture_forward,
)
from nas.policies.dqss import quant_layers
from nas.quant import QuantConv2d, QuantLinear, QuantScheme
from search_spaces.mobile_unet import DEFAULT_QUANT

# Coarse activation grids make the cross terms of the product mixture visible.
COARSE = ("w4a3:minmax", "w3a4:pact", "w8a8:lsq", "fp16", "fp32")


def _layers(quant=DEFAULT_QUANT):
    torch.manual_seed(0)
    conv = QuantConv2d(8, 16, 3, padding=1, quant=list(quant))
    lin = QuantLinear(12, 20, quant=list(quant))
    return [(conv, torch.randn(2, 8, 6, 6)), (lin, torch.randn(2, 5, 12))]


def _probs(k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(k, generator=g) * 2, 0)


@pytest.mark.parametrize("i", [0, 1], ids=["conv", "linear"])
def test_one_conv_weight_mixing_equals_k_convolutions(i):
    layer, x = _layers()[i]
    p = _probs(len(layer.quant_candidates))
    layer.quant_mix, layer.quant_mix_acts = p, False  # activations unquantized
    one = layer(x)
    k_path = k_path_forward(layer, x, p, acts=False)
    torch.testing.assert_close(one, k_path, rtol=1e-5, atol=1e-5)
    # a real mixture: it differs from every single candidate's output
    singles = [k_path_forward(layer, x, torch.eye(len(p))[k], acts=False) for k in range(len(p))]
    assert all((one - s).abs().max() > 1e-4 for s in singles)


@pytest.mark.parametrize("i", [0, 1], ids=["conv", "linear"])
def test_mixed_activations_give_the_product_mixture_not_the_k_path_one(i):
    layer, x = _layers(COARSE)[i]
    p = torch.full((len(COARSE),), 1.0 / len(COARSE))
    layer.quant_mix = p
    one = layer(x)
    # conv(Σ_l p_l Q^a_l x, Σ_k p_k Q^w_k W) = Σ_k Σ_l p_k p_l conv(Q^a_l x, Q^w_k W) (bilinear)
    torch.testing.assert_close(one, product_mixture_forward(layer, x, p), rtol=1e-4, atol=1e-4)
    # ... which is NOT Σ_k p_k conv(Q^a_k x, Q^w_k W) once activation quantizers differ: the
    # gap is far above float error (~1e-6), though small next to the outputs (~1)
    assert (one - k_path_forward(layer, x, p, acts=True)).abs().max() > 1e-3


@pytest.mark.parametrize("k", range(len(DEFAULT_QUANT)))
def test_one_hot_mixture_is_the_single_scheme(k):
    layer, x = _layers()[0]
    scheme = layer.quant_candidates[k]
    layer.quant = scheme
    single = layer(x)
    layer.quant_mix = torch.eye(len(layer.quant_candidates))[k]
    torch.testing.assert_close(layer(x), single, rtol=0, atol=1e-6)


def test_gradients_reach_logits_weights_and_quantizer_params():
    layer, x = _layers()[0]
    logits = torch.zeros(len(layer.quant_candidates), requires_grad=True)
    layer.quant_mix = torch.softmax(logits, 0)
    layer(x).pow(2).mean().backward()
    for name, t in [("logits", logits), ("weight", layer.weight), ("wq_lsq", layer.wq_lsq)]:
        assert t.grad is not None and t.grad.abs().sum() > 0, name
    assert layer.aq_lsq.grad is not None and layer.aq_lsq.grad.abs().sum() > 0


def test_option_order_is_mapped_to_the_layers_candidate_order():
    net = make_net()
    lab = "conv_in.quant"
    layer = net.get_submodule(net.quant_paths[lab])
    # rebuild the layer's candidates in reverse order: the policy must permute
    layer.quant_candidates = tuple(reversed(layer.quant_candidates))
    mix = QuantStrategyMixing(net.space, quant_layers(net, [lab]))
    with torch.no_grad():
        mix.logits[0][0] = torch.arange(len(DEFAULT_QUANT), dtype=torch.float32)
    mix.refresh()
    p_opt = mix.probabilities()[lab]
    cands = [str(s) for s in layer.quant_candidates]
    for j, opt in enumerate(net.space[lab].options):
        assert layer.quant_mix[cands.index(str(QuantScheme.parse(opt)))] == p_opt[j]
    assert mix.argmax()[lab] == net.space[lab].options[-1]


def test_policy_argmax_breaks_ties_toward_precision_and_follows_logits():
    net = make_net()
    pol = DifferentiablePolicy(net, search=("quant",))
    assert {pol.discretize()[lab] for lab in pol.quant.labels} == {"fp32"}
    g, r, _ = pol.quant._where["conv_out.quant"]
    with torch.no_grad():
        pol.quant.logits[g][r][0] = 3.0
    assert pol.discretize()["conv_out.quant"] == DEFAULT_QUANT[0]
