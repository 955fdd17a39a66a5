"""PaS masks: probed sites, tied masks, exact binary forward with STE gradient, snapping."""

from __future__ import annotations

import pytest
import torch
from policy_helpers import make_net

from latency_tables.cost import soft_choice
from nas.policies import DifferentiablePolicy, soft_probs
from nas.policies.pas import snap
from nas.quant import set_quant_enabled


@pytest.fixture(scope="module")
def net():
    return make_net()


def _set_frac(pol: DifferentiablePolicy, values: dict[str, float]) -> None:
    with torch.no_grad():
        for lab, v in values.items():
            pol.masks.frac[pol.masks.labels.index(lab)] = v


def test_probe_finds_width_like_labels_only(net):
    pol = DifferentiablePolicy(net, search=("width",))
    space = net.space
    structural = [lab for lab in space.labels if not lab.endswith(".quant")]
    assert set(pol.masks.labels) == {
        lab for lab in structural if lab.endswith((".width", ".heads", ".inner"))
    }
    by_side = {(s.path, s.side): s for s in pol.masks.sites}
    # an up block's first ResNet reads [previous stage stream | this stage's skip]
    seg = by_side[("up_blocks.1.resnets.0.conv1", "in")].segments
    assert [(g.length, g.labels) for g in seg] == [
        (24, ("stage.1.width",)),
        (16, ("stage.0.width",)),
    ]
    # inner width = ratio × stage width: both labels size conv1's output
    assert by_side[("down_blocks.0.resnets.0.conv1", "out")].segments[0].labels == (
        "stage.0.width",
        "down.0.res0.inner",
    )
    # heads are masked whole (dim_head = 24 / 2 channels per unit)
    q = by_side[("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "out")]
    assert q.segments[0].labels == ("stage.1.heads",) and q.segments[0].unit == 12


def _capture(net, paths_out, paths_in):
    """Record outputs / inputs as the network sees them (hooks added after the policy's)."""
    seen, handles = {}, []
    for p in paths_out:
        handles.append(
            net.get_submodule(p).register_forward_hook(
                lambda m, a, o, p=p: seen.__setitem__(p, o.detach())
            )
        )
    for p in paths_in:
        handles.append(
            net.get_submodule(p).register_forward_pre_hook(
                lambda m, a, p=p: seen.__setitem__(p + ":in", a[0].detach())
            )
        )
    return seen, handles


def test_stage_width_mask_is_tied_across_added_and_concatenated_tensors(net):
    pol = DifferentiablePolicy(net, search=("width",))
    outs = [
        "conv_in",
        "down_blocks.0.resnets.0",
        "down_blocks.0.resnets.1",
        "up_blocks.1.resnets.2",
    ]
    ins = ["conv_out", "up_blocks.1.resnets.0.conv1"]
    x = net.example_inputs(2)
    with pol:
        seen, handles = _capture(net, outs, ins)
        try:
            for frac, kept in ((1.0, 16), (0.5, 8), (0.75, 12)):
                _set_frac(pol, {"stage.0.width": frac})
                net(**x)
                for p in outs + ["conv_out:in"]:
                    t = seen[p]
                    assert t[:, kept:].abs().sum() == 0, (p, frac)
                    assert (t[:, :kept].abs().flatten(2).amax(-1) > 0).all(), (p, frac)
                cat = seen["up_blocks.1.resnets.0.conv1:in"]  # (B, 24 + 16, H, W)
                assert cat[:, 24 + kept :].abs().sum() == 0
                assert (cat[:, :24].abs().flatten(2).amax(-1) > 0).all()  # stage 1 untouched
        finally:
            for h in handles:
                h.remove()


def test_head_masks_equal_slicing_whole_heads(net):
    x = net.example_inputs(2)
    set_quant_enabled(net, False)
    try:
        pol = DifferentiablePolicy(net, search=("width",))
        small = dict(net.space.max(), **{"stage.1.heads": 1, "mid.heads": 1})
        with net.activate(small):
            want = net(**x).sample
        with pol, net.activate(pol.structure_sample()):
            _set_frac(pol, {"stage.1.heads": 0.5, "mid.heads": 0.5})
            got = net(**x).sample
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    finally:
        set_quant_enabled(net, True)


def test_masks_are_binary_forward_and_pass_gradients_straight_through(net):
    pol = DifferentiablePolicy(net, search=("width",))
    _set_frac(pol, {lab: 0.8 for lab in pol.masks.labels})
    pol.masks.refresh()
    for i in range(len(pol.masks.sites)):
        m = pol.masks.site_mask(i)
        assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    with pol:
        net(**net.example_inputs(2)).sample.pow(2).mean().backward()
    g = pol.masks.frac.grad
    assert g is not None and (g != 0).all(), g


def test_soft_probs_interpolates_between_neighbouring_options():
    opts = [8, 12, 16, 24]
    torch.testing.assert_close(
        soft_probs(opts, torch.tensor(9.0)), torch.tensor([0.75, 0.25, 0, 0])
    )
    torch.testing.assert_close(soft_probs(opts, torch.tensor(30.0)), torch.tensor([0.0, 0, 0, 1]))
    assert soft_choice is soft_probs  # the cost model uses the same function
    v = torch.tensor(14.0, requires_grad=True)
    (soft_probs(opts, v) * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert v.grad == pytest.approx(0.25)


def test_snap_counts_kept_units_and_breaks_ties_upward(net):
    assert snap([8, 16], 12.0) == 16 and snap([8, 16], 11.9) == 8 and snap([0.5, 1.0], 0.74) == 0.5
    pol = DifferentiablePolicy(net, search=("width",))
    _set_frac(pol, {"stage.0.width": 0.5, "stage.1.width": 0.3, "down.0.res0.inner": 0.76})
    pol.project()  # 0.3 < 16/24: clamped to the smallest option
    assert float(pol.masks.frac.detach()[pol.masks.labels.index("stage.1.width")]) == pytest.approx(
        16 / 24
    )
    s = pol.discretize()
    assert s["stage.0.width"] == 8 and s["stage.1.width"] == 16 and s["down.0.res0.inner"] == 1.0
