"""Slicing maths of elastic layers, on raw tensors and against plain torch layers."""

import pytest
import torch
import torch.nn.functional as F

from nas.elastic import (
    ElasticAttention,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
    segments,
    select,
    slice_vector,
    slice_weight,
)
from nas.quant import QuantScheme


def test_slice_weight_prefix_and_segments():
    w = torch.arange(6 * 8, dtype=torch.float32).view(6, 8)
    assert torch.equal(slice_weight(w, 4, 3), w[:4, :3])
    segs = segments([(2, 3), (4, 5)])  # concat of a 3-wide and a 5-wide tensor, 2 and 4 active
    assert segs == ((0, 2), (3, 4))
    assert torch.equal(slice_weight(w, None, segs), w[:, [0, 1, 3, 4, 5, 6]])
    assert torch.equal(slice_vector(torch.arange(8.0), segs), torch.tensor([0.0, 1, 3, 4, 5, 6]))
    assert slice_vector(None, 3) is None
    assert select(w, 1, None) is w
    with pytest.raises(ValueError):
        segments([(0, 3)])


def test_conv_equals_small_conv_with_copied_slice():
    torch.manual_seed(0)
    big = ElasticConv2d(8, 12, 3, padding=1)
    x = torch.randn(2, 5, 6, 6)
    configure(big, inp=5, out=7)
    small = torch.nn.Conv2d(5, 7, 3, padding=1)
    small.load_state_dict(big.sliced_state())
    torch.testing.assert_close(big(x), small(x), rtol=0, atol=0)


def test_conv_over_concatenated_input_uses_segment_weights():
    torch.manual_seed(0)
    big = ElasticConv2d(6 + 10, 4, 1)
    a, b = torch.randn(1, 3, 2, 2), torch.randn(1, 5, 2, 2)
    configure(big, inp=segments([(3, 6), (5, 10)]))
    # same as the full conv over a zero-padded max concatenation
    padded = torch.cat([a, torch.zeros(1, 3, 2, 2), b, torch.zeros(1, 5, 2, 2)], 1)
    ref = F.conv2d(padded, big.weight, big.bias)
    torch.testing.assert_close(big(torch.cat([a, b], 1)), ref, rtol=1e-6, atol=1e-6)


def test_linear_groupnorm_layernorm_slices():
    torch.manual_seed(0)
    lin = ElasticLinear(16, 10)
    configure(lin, inp=8, out=4)
    x = torch.randn(3, 8)
    torch.testing.assert_close(lin(x), x @ lin.weight[:4, :8].T + lin.bias[:4])
    gn = ElasticGroupNorm(4, 32)
    torch.nn.init.normal_(gn.weight)
    gn.active_out = 16
    y = torch.randn(2, 16, 3, 3)
    ref = torch.nn.GroupNorm(4, 16)
    ref.load_state_dict(gn.sliced_state())
    torch.testing.assert_close(gn(y), ref(y))
    ln = ElasticLayerNorm(32)
    torch.nn.init.normal_(ln.bias)
    ln.active_out = 12
    z = torch.randn(2, 5, 12)
    torch.testing.assert_close(ln(z), F.layer_norm(z, (12,), ln.weight[:12], ln.bias[:12]))


@pytest.mark.parametrize("cross", [False, True])
def test_attention_heads_slice_whole_heads(cross):
    torch.manual_seed(0)
    att = ElasticAttention(32, heads=4, dim_head=8, cross_attention_dim=12 if cross else None)
    att.set_active(width=16, heads=2)
    small = ElasticAttention(16, heads=2, dim_head=8, cross_attention_dim=12 if cross else None)
    for name in ("to_q", "to_k", "to_v", "to_out.0"):
        small.get_submodule(name).load_state_dict(att.get_submodule(name).sliced_state())
    x, ctx = torch.randn(2, 9, 16), torch.randn(2, 3, 12)
    c = ctx if cross else None
    torch.testing.assert_close(att(x, c), small(x, c), rtol=0, atol=0)
    # by hand: per head softmax(q k^T / sqrt(d)) v
    q = x @ att.to_q.weight[:16, :16].T
    src = ctx if cross else x
    k = src @ att.to_k.weight[:16, : src.shape[-1]].T
    v = src @ att.to_v.weight[:16, : src.shape[-1]].T
    heads = []
    for h in range(2):
        sl = slice(8 * h, 8 * h + 8)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 8**0.5, -1)
        heads.append(a @ v[..., sl])
    ref = torch.cat(heads, -1) @ att.to_out[0].weight[:16, :16].T + att.to_out[0].bias[:16]
    torch.testing.assert_close(att(x, c), ref, rtol=1e-5, atol=1e-5)


def test_quant_scheme_slices_learned_parameters():
    conv = ElasticConv2d(8, 16, 1, quant=["fp32", "w4a8:lsq"])
    assert conv.quant is None  # several candidates: float until activated
    configure(conv, inp=8, out=6, quant=QuantScheme.parse("w4a8:lsq"))
    state = conv.sliced_state()
    assert state["wq_lsq"].shape == (6,) and state["aq_lsq"].shape == (1,)
    y = conv(torch.randn(1, 8, 2, 2))
    assert y.shape == (1, 6, 2, 2)
    conv.reset_active()
    assert conv.quant is None and conv.active_out is None
