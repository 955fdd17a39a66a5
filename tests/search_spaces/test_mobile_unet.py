"""Family tests of `search_spaces.mobile_unet`: diffusers teacher, specs, samples, signature."""

from __future__ import annotations

import dataclasses
import inspect
import time

import pytest
import torch
from layer_positions import positions_by_hooks

from nas import SPACES, ArchSpec, ConfigError, InvalidSampleError, QuantScheme
from nas.quant import QuantMixin, set_quant_enabled
from search_spaces.mobile_unet import (
    TEST_MOBILE_UNET,
    TEST_MOBILE_UNET_ATTN,
    MobileUNet,
    MobileUNetConfig,
    MobileUNetSupernet,
    diffusers_config,
    inner_width,
    make_space,
)

TINY = ["test_mobile_unet", "test_mobile_unet_attn"]


def _teacher(cfg: MobileUNetConfig, seed: int = 0, **overrides) -> torch.nn.Module:
    """A `UNet2DConditionModel` of the config's max architecture, with non-trivial weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    teacher = UNet2DConditionModel(**{**diffusers_config(cfg), **overrides}).eval()
    with torch.no_grad():  # zero-initialised convs / biases and unit norms → random
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher


def _inputs(cfg: MobileUNetConfig, batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = cfg.sample_size
    return {
        "sample": torch.randn(batch, cfg.in_channels, s, s, generator=g),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "encoder_hidden_states": torch.randn(
            batch, cfg.context_len, cfg.cross_attention_dim, generator=g
        ),
    }


@pytest.fixture(scope="module", params=TINY)
def net(request) -> MobileUNetSupernet:
    torch.manual_seed(0)
    return SPACES.get(request.param).supernet().eval()


# ----------------------------------------------------------------------------- teacher
def test_diffusers_config_is_the_sd_layout():
    """The max architecture is UNet2DConditionModel with the SD block types (tiny config)."""
    want = {
        "in_channels": 1,
        "out_channels": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [16, 24],
        "layers_per_block": [2, 2],
        "attention_head_dim": [1, 2],
        "cross_attention_dim": 8,
        "norm_num_groups": 4,
        "use_linear_projection": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }
    got = diffusers_config(TEST_MOBILE_UNET)
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("name", TINY)
def test_supernet_from_saved_teacher_reproduces_it(name, tmp_path):
    cfg = SPACES.get(name).config
    teacher = _teacher(cfg)
    teacher.save_pretrained(tmp_path / "unet", safe_serialization=True)
    torch.manual_seed(1)
    net = MobileUNetSupernet.from_diffusers(tmp_path / "unet", name).eval()
    set_quant_enabled(net, False)
    inputs = _inputs(cfg)
    top = net.space.max()
    with torch.no_grad():
        ref = teacher(**inputs).sample
        with net.activate(top):
            y = net(**inputs).sample
        y_model = net.extract(top)(**inputs).sample
    assert (y - ref).abs().max().item() <= 1e-5
    assert (y_model - ref).abs().max().item() <= 1e-5


def test_missing_teacher_shortcut_becomes_identity(tmp_path):
    """Stages 1 and 2 of test_mobile_unet_attn both max out at 24: diffusers has no shortcut."""
    cfg = TEST_MOBILE_UNET_ATTN
    teacher = _teacher(cfg)
    key = "down_blocks.2.resnets.0.conv_shortcut.weight"
    assert key not in teacher.state_dict()
    net = MobileUNetSupernet(cfg)
    net.load_teacher(teacher)
    w = net.get_parameter(key)
    assert torch.equal(w[:, :, 0, 0], torch.eye(24))
    assert not net.get_parameter(key.replace("weight", "bias")).any()


def test_conv_projection_teacher_is_refused_unless_allowed():
    """SD-1.5 checkpoints use 1×1 conv proj_in/out; they load only when asked to."""
    cfg = TEST_MOBILE_UNET
    teacher = _teacher(cfg, use_linear_projection=False)
    net = MobileUNetSupernet(cfg).eval()
    with pytest.raises(ConfigError, match="use_linear_projection"):
        net.load_teacher(teacher)
    net.load_teacher(teacher, allow_conv_projection=True)
    set_quant_enabled(net, False)
    inputs = _inputs(cfg)
    with torch.no_grad():
        diff = (net(**inputs).sample - teacher(**inputs).sample).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize(
    "key,value",
    [
        ("block_out_channels", [16, 32]),
        ("layers_per_block", 1),
        ("transformer_layers_per_block", 2),
        ("attention_head_dim", 1),
        ("cross_attention_dim", 16),
        ("norm_num_groups", 8),
        ("use_linear_projection", False),
        ("in_channels", 3),
        ("out_channels", 2),
        ("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]),
        ("flip_sin_to_cos", False),
        ("resnet_time_scale_shift", "scale_shift"),
    ],
)
def test_mismatched_teacher_is_refused_naming_the_key(key, value):
    from diffusers import UNet2DConditionModel

    teacher = UNet2DConditionModel(**{**diffusers_config(TEST_MOBILE_UNET), key: value})
    net = MobileUNetSupernet(TEST_MOBILE_UNET)
    with pytest.raises(ConfigError, match=key):
        net.load_teacher(teacher)


def test_mismatched_saved_teacher_is_refused_before_loading(tmp_path):
    from diffusers import UNet2DConditionModel

    cfg = {**diffusers_config(TEST_MOBILE_UNET), "layers_per_block": 1}
    UNet2DConditionModel(**cfg).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="layers_per_block"):
        MobileUNetSupernet(TEST_MOBILE_UNET).load_teacher(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        MobileUNetSupernet(TEST_MOBILE_UNET).load_teacher(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- specs
def test_freeze_round_trips_and_hashes_ignore_unused_labels(net):
    space = net.space
    s = space.max()
    spec = space.freeze(s)
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert spec.hash == space.freeze(dict(s)).hash

    # Depth 1 at stage 0: the down block's 2nd ResNet and the up block's middle one are
    # unused, and so are their labels.
    a = dict(s, **{"stage.0.depth": 1})
    b = dict(a)
    b["down.0.res1.inner"] = space["down.0.res1.inner"].options[0]
    u = len([lab for lab in space.labels if lab.endswith(".width")]) - 1  # up block of stage 0
    b[f"up.{u}.res1.inner"] = space[f"up.{u}.res1.inner"].options[0]
    b[f"up_blocks.{u}.resnets.1.conv1.quant"] = space[
        f"up_blocks.{u}.resnets.1.conv1.quant"
    ].options[0]
    b["down_blocks.0.resnets.1.conv2.quant"] = space["down_blocks.0.resnets.1.conv2.quant"].options[
        0
    ]
    assert space.freeze(a).hash == space.freeze(b).hash
    # ... while the kept last up ResNet (max index 2) still counts.
    c = dict(a, **{f"up.{u}.res2.inner": space[f"up.{u}.res2.inner"].options[0]})
    assert space.freeze(c).hash != space.freeze(a).hash

    # No attention at a stage: its heads and attention quant labels are unused.
    attn = next(lab for lab in space.labels if lab.endswith(".attn") and 0 in space[lab].options)
    st = attn.split(".")[1]
    a = dict(s, **{attn: 0})
    b = dict(a, **{f"stage.{st}.heads": space[f"stage.{st}.heads"].options[0]})
    q = f"down_blocks.{st}.attentions.0.transformer_blocks.0.attn1.to_q.quant"
    b[q] = space[q].options[0]
    assert space.freeze(a).hash == space.freeze(b).hash
    assert space.canonical(b)[q] == space[q].default


def test_spec_lists_every_block_and_matches_the_extracted_model(net):
    cfg = net.config
    space = net.space
    for s in [space.min(), space.max(), *space.sample_many(3, rng=5)]:
        spec = space.freeze(s)
        for b in spec.blocks:
            d = b.d
            if b.kind in ("resnet", "transformer", "transformer_io", "downsample", "upsample"):
                assert d["H"] > 0 and d["W"] > 0, b.path
            if b.kind == "resnet":
                assert {"in", "inner", "out", "temb"} <= set(d)
            if b.kind == "transformer":
                assert d["tokens"] == d["H"] * d["W"]
                assert d["context_len"] == cfg.context_len
                assert d["context_dim"] == cfg.cross_attention_dim
                assert d["ff_inner"] == 4 * d["width"]
        model = net.extract(s)
        layers = {p: m for p, m in model.named_modules() if isinstance(m, QuantMixin)}
        assert {layer.path for layer in spec.layers} == set(layers)
        for layer in spec.layers:
            m = layers[layer.path]
            w = m.weight
            assert (w.shape[1], w.shape[0]) == (layer.in_features, layer.out_features), layer.path
            assert m.quant == layer.quant
        assert net.quant_plan(s) == {layer.path: str(layer.quant) for layer in spec.layers}


def test_layer_positions_and_labels_follow_the_model(net):
    """positions = what the extracted model runs (batch 1); label = the scheme's own label."""
    space, cfg = net.space, net.config
    samples = [space.min(), space.max(), *space.sample_many(3, rng=11)]
    macs = []
    for s in samples:
        spec = space.freeze(s)
        model = net.extract(s)
        set_quant_enabled(model, False)
        got = positions_by_hooks(model, _inputs(cfg, batch=1))
        assert got == {layer.path: layer.positions for layer in spec.layers}
        chosen = spec.sample_dict
        for layer in spec.layers:
            assert layer.label in space.labels, layer.path
            assert QuantScheme.parse(chosen[layer.label]) == layer.quant, layer.path
        macs.append(sum(layer.macs for layer in spec.layers))
    assert macs[0] < macs[1] and all(macs[0] <= m <= macs[1] for m in macs)
    # A shallower stage: the up block's last ResNet is the supernet's last (its label).
    s = space.max() | {"stage.0.depth": 1}
    u = cfg.num_stages - 1
    layer = {x.path: x for x in space.freeze(s).layers}[f"up_blocks.{u}.resnets.1.conv1"]
    assert layer.label == f"up_blocks.{u}.resnets.2.conv1.quant"


def test_inner_width_rounds_to_whole_groups():
    assert inner_width(0.5, 24, 4) == 12
    assert inner_width(0.75, 48, 8) == 40  # 36 → 4.5 groups → 5 (half up)
    assert inner_width(0.1, 16, 8) == 8  # at least one group


def test_up_block_depth_maps_the_last_resnet_to_the_max_one(net):
    s = net.space.max()
    s["stage.0.depth"] = 1
    u = net.config.num_stages - 1
    with net.activate(s):
        assert net.source_path(f"up_blocks.{u}.resnets.1.conv1") == f"up_blocks.{u}.resnets.2.conv1"
        assert net.source_path(f"up_blocks.{u}.resnets.0.conv1") == f"up_blocks.{u}.resnets.0.conv1"
    assert net.source_path(f"up_blocks.{u}.resnets.1.conv1") == f"up_blocks.{u}.resnets.1.conv1"


@pytest.mark.parametrize("quant", [False, True], ids=["float", "quant"])
def test_extracted_equals_activated(net, quant):
    set_quant_enabled(net, quant)
    inputs = net.example_inputs(batch=2, seed=1)
    worst = 0.0
    with torch.no_grad():
        for s in [net.space.min(), net.space.max(), *net.space.sample_many(4, rng=1)]:
            with net.activate(s):
                y = net(**inputs).sample
            worst = max(worst, (net.extract(s)(**inputs).sample - y).abs().max().item())
    set_quant_enabled(net, False)
    assert worst <= (1e-6 if quant else 1e-5)


# ----------------------------------------------------------------------------- samples
def test_invalid_samples_name_the_label(net):
    space = net.space
    s = space.max()
    s["stage.0.width"] = 7
    with pytest.raises(InvalidSampleError, match=r"stage\.0\.width"):
        space.freeze(s)
    with pytest.raises(InvalidSampleError, match=r"stage\.0\.width"):
        net.extract(s)
    s = space.max()
    s["conv_in.quant"] = "w3a3:nope"
    with pytest.raises(InvalidSampleError, match=r"conv_in\.quant"), net.activate(s):
        pass
    s = space.max()
    del s["mid.heads"]
    with pytest.raises(InvalidSampleError, match=r"mid\.heads"):
        space.freeze(s)
    with pytest.raises(InvalidSampleError, match=r"stage\.9\.width"):
        space.freeze({**space.max(), "stage.9.width": 8})


def test_bad_configs_are_refused():
    base = TEST_MOBILE_UNET
    with pytest.raises(ConfigError, match="norm_num_groups"):
        dataclasses.replace(base, width_options=((6, 16), (16, 24)))
    with pytest.raises(ConfigError, match="depth_options"):
        dataclasses.replace(base, depth_options=((1, 2),))
    with pytest.raises(ConfigError, match="mid_attn_depth"):
        dataclasses.replace(base, attn_depth_options=((0,), (0, 1, 2)))
    with pytest.raises(ConfigError, match="inner_ratios"):
        dataclasses.replace(base, inner_ratios=(0.5, 0.75))
    with pytest.raises(ConfigError, match="quant"):
        dataclasses.replace(base, quant_options=("fp32", "w9a9:minmax"))


# ----------------------------------------------------------------------------- standalone
def test_standalone_forward_matches_diffusers_signature_and_output(net):
    from diffusers import UNet2DConditionModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    ours = list(inspect.signature(MobileUNet.forward).parameters)
    theirs = list(inspect.signature(UNet2DConditionModel.forward).parameters)
    assert ours[:4] == theirs[:4] == ["self", "sample", "timestep", "encoder_hidden_states"]
    assert "return_dict" in ours and "return_dict" in theirs
    assert inspect.signature(MobileUNet.forward).parameters["return_dict"].default is True

    model = net.extract(net.space.sample(rng=2))
    inputs = net.example_inputs(batch=2, seed=3)
    x, ctx = inputs["sample"], inputs["encoder_hidden_states"]
    with torch.no_grad():
        out = model(x, 7, ctx)
        assert isinstance(out, UNet2DConditionOutput) and out.sample.shape == x.shape
        tup = model(x, 7, ctx, return_dict=False)
        assert isinstance(tup, tuple) and len(tup) == 1
        torch.testing.assert_close(tup[0], out.sample, rtol=0, atol=0)
        for t in (7.0, torch.tensor(7), torch.tensor([7]), torch.tensor([7, 7])):
            torch.testing.assert_close(model(x, t, ctx).sample, out.sample, rtol=0, atol=0)
        with pytest.raises(ValueError, match="timestep"):
            model(x, torch.tensor([1, 2, 3]), ctx)


def test_standalone_save_and_from_pretrained_round_trip(net, tmp_path):
    s = net.space.max()
    for lab in net.space.labels:
        if lab.endswith(".quant"):
            s[lab] = "w4a8:lsq"  # learned quantizer parameters must be saved and loaded
    s["stage.0.depth"] = 1
    set_quant_enabled(net, True)
    model = net.extract(s)
    set_quant_enabled(net, False)
    with torch.no_grad():  # give the learned steps non-default values
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith(("wq_", "aq_")):
                p.uniform_(-0.2, 0.2)
    assert any(".wq_lsq" in k for k in model.state_dict())
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = MobileUNet.from_pretrained(tmp_path)
    assert loaded.config.quant_plan == model.config.quant_plan
    inputs = net.example_inputs(batch=1, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, rtol=0, atol=0)


def test_standalone_refuses_unknown_quant_plan_paths():
    with pytest.raises(ConfigError, match="quant_plan"):
        MobileUNet(quant_plan={"down_blocks.9.resnets.0.conv1": "fp16"})


# ----------------------------------------------------------------------------- registry
def test_registered_variants():
    assert {"mobile_unet", "mobile_unet_sd15", *TINY} <= set(SPACES.names())
    for name in ("mobile_unet", *TINY):
        space = SPACES.get(name).space()
        assert space.size > 1 and space.name == name


def test_sd15_space_is_fast_and_sd_shaped():
    entry = SPACES.get("mobile_unet_sd15")
    t0 = time.perf_counter()
    space = entry.space()
    spec = space.freeze(space.max())
    assert time.perf_counter() - t0 < 2.0
    want = diffusers_config(entry.config)
    assert want["block_out_channels"] == [320, 640, 1280, 1280]
    assert want["layers_per_block"] == [2, 2, 2, 2]
    assert want["attention_head_dim"] == [8, 8, 8, 8]
    assert want["transformer_layers_per_block"] == [1, 1, 1, 1]
    assert want["down_block_types"][-1] == "DownBlock2D" and want["cross_attention_dim"] == 768
    assert "stage.3.attn" not in space.labels and "stage.0.attn" in space.labels
    blocks = {b.path: b.d for b in spec.blocks}
    t0 = blocks["down_blocks.0.attentions.0.transformer_blocks.0"]
    assert (t0["tokens"], t0["heads"], t0["dim_head"], t0["context_len"]) == (4096, 8, 40, 77)
    assert blocks["mid_block.attentions.0.transformer_blocks.0"]["dim_head"] == 160
    # 1280 → 1280 at max, but a sample can narrow one side: the supernet keeps a shortcut.
    assert blocks["down_blocks.3.resnets.0"]["shortcut"] is True
    small = space.freeze(space.min())
    assert not any(b.kind == "transformer" and b.path.startswith("down") for b in small.blocks)


def test_custom_space_name_and_lists_from_yaml():
    cfg = MobileUNetConfig(
        sample_size=8,
        width_options=[[8, 16], [16]],
        depth_options=[[1], [1]],
        attn_depth_options=[[0], [1]],
        heads_options=[[1], [2]],
        inner_ratios=[1.0],
        norm_num_groups=4,
        cross_attention_dim=8,
        context_len=2,
        quant_options=["fp32"],
    )
    space = make_space(cfg, "custom_unet")
    assert space.name == "custom_unet" and space.size == 2
    assert isinstance(cfg.width_options, tuple)
    net = MobileUNetSupernet(cfg, space).eval()
    with torch.no_grad():
        y = net(**net.example_inputs(batch=1)).sample
    assert y.shape == (1, 1, 8, 8)
