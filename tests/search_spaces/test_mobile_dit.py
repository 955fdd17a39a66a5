"""Family tests of `search_spaces.mobile_dit`: PixArt teacher, specs, samples, signature."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from layer_positions import positions_by_hooks

from nas import SPACES, ArchSpec, ConfigError, InvalidSampleError, QuantScheme
from nas.quant import set_quant_enabled
from search_spaces.mobile_dit import (
    MobileDiT,
    MobileDiTConfig,
    MobileDiTSupernet,
    make_space,
)

TINY = "test_mobile_dit"


def _pixart_kwargs(cfg: MobileDiTConfig) -> dict:
    """PixArtTransformer2DModel kwargs of a config's max architecture."""
    return {
        "num_attention_heads": cfg.max_heads,
        "attention_head_dim": cfg.dim_head,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "num_layers": cfg.max_depth,
        "cross_attention_dim": cfg.max_width if cfg.cross_attention else None,
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "caption_channels": cfg.caption_channels if cfg.cross_attention else None,
        "use_additional_conditions": False,
    }


def _teacher(cfg: MobileDiTConfig, path: Path, seed: int = 0) -> torch.nn.Module:
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    teacher = PixArtTransformer2DModel(**_pixart_kwargs(cfg)).eval()
    with torch.no_grad():  # non-trivial tables (PixArt's init is random already; keep it)
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    teacher.save_pretrained(path, safe_serialization=True)
    return teacher


def _net(cfg: MobileDiTConfig, name: str = "custom_dit") -> MobileDiTSupernet:
    torch.manual_seed(1)
    return MobileDiTSupernet(cfg, make_space(cfg, name)).eval()


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pixart")
    _teacher(SPACES.get(TINY).config, path)
    return path


# A config with no cross-attention and a learned-σ head (2 → 4 channels), non-square input.
NO_CROSS = MobileDiTConfig(
    sample_size=8,
    patch_size=2,
    in_channels=2,
    out_channels=4,
    caption_channels=16,
    context_len=2,
    widths=(8, 16),
    depths=(1, 2),
    heads=(1, 2),
    mlp_ratios=(2, 4),
    cross_attention=False,
    quant=("w8a8:lsq", "fp32"),
)


@pytest.mark.parametrize("which", ["registered", "no_cross"])
def test_max_sample_reproduces_pixart_teacher(tmp_path, which):
    cfg = SPACES.get(TINY).config if which == "registered" else NO_CROSS
    teacher = _teacher(cfg, tmp_path)
    net = _net(cfg)
    net.load_teacher(tmp_path)
    set_quant_enabled(net, False)
    g = torch.Generator().manual_seed(0)
    b = 3
    x = torch.randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.tensor([3, 500, 999])
    ctx = None
    if cfg.cross_attention:
        ctx = torch.randn(b, cfg.context_len, cfg.caption_channels, generator=g)
    mask = torch.ones(b, cfg.context_len)
    mask[0, -1] = 0
    extra = {"encoder_attention_mask": mask} if cfg.cross_attention else {}
    with torch.no_grad():
        ref = teacher(x, encoder_hidden_states=ctx, timestep=t, **extra).sample
        with net.activate(net.space.max()):
            got = net(x, encoder_hidden_states=ctx, timestep=t, **extra).sample
        model = net.extract(net.space.max())
        standalone = model(x, encoder_hidden_states=ctx, timestep=t, **extra).sample
        # A non-square input recomputes the sin-cos grid as PixArt does.
        x2 = torch.randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size // 2, generator=g)
        ref2 = teacher(x2, encoder_hidden_states=ctx, timestep=t).sample
        got2 = net(x2, encoder_hidden_states=ctx, timestep=t).sample
    assert got.shape == ref.shape == (b, cfg.out_ch, cfg.sample_size, cfg.sample_size)
    assert (got - ref).abs().max().item() <= 1e-5
    assert (standalone - ref).abs().max().item() <= 1e-5
    assert (got2 - ref2).abs().max().item() <= 1e-5


KEY_CHANGES = {
    "num_attention_heads": 4,
    "attention_head_dim": 8,
    "num_layers": 3,
    "in_channels": 4,
    "out_channels": 2,
    "patch_size": 4,
    "sample_size": 16,
    "caption_channels": 8,
    "cross_attention_dim": 64,
    "norm_type": "ada_norm_zero",
    "activation_fn": "geglu",
    "use_additional_conditions": True,
    "norm_elementwise_affine": True,
    "interpolation_scale": 2,
}


@pytest.mark.parametrize("key", sorted(KEY_CHANGES))
def test_mismatched_teacher_is_refused_naming_the_key(tiny_teacher_dir, tmp_path, key):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_teacher_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config[key] = KEY_CHANGES[key]
    (bad / "config.json").write_text(json.dumps(config))
    net = SPACES.get(TINY).supernet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ConfigError, match=rf"\b{key}="):
        net.load_teacher(bad)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_teacher_with_additional_conditions_by_default_is_refused(tiny_teacher_dir, tmp_path):
    # PixArt turns additional conditions on by itself when sample_size == 128.
    cfg = MobileDiTConfig(
        sample_size=128,
        patch_size=16,
        widths=(16,),
        depths=(1,),
        heads=(1,),
        mlp_ratios=(4,),
        caption_channels=8,
        context_len=1,
    )
    bad = tmp_path / "bad"
    shutil.copytree(tiny_teacher_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config.update(_pixart_kwargs(cfg), use_additional_conditions=None)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="use_additional_conditions=True"):
        _net(cfg).load_teacher(bad)


def test_not_a_model_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="save_pretrained"):
        SPACES.get(TINY).supernet().load_teacher(tmp_path)


def test_config_errors_teach_the_fix():
    with pytest.raises(ConfigError, match="use_additional_conditions"):
        MobileDiTConfig(use_additional_conditions=True)
    with pytest.raises(ConfigError, match="multiples of 4"):
        MobileDiTConfig(widths=(30, 64))
    with pytest.raises(ConfigError, match="not an integer"):
        MobileDiTConfig(widths=(20, 64), mlp_ratios=(2.3, 4))
    with pytest.raises(ConfigError, match="dim_head"):
        MobileDiTConfig(widths=(64, 96), heads=(5,))
    with pytest.raises(ConfigError, match="out_channels"):
        MobileDiTConfig(out_channels=3)
    with pytest.raises(ConfigError, match="increasing order"):
        MobileDiTConfig(depths=(8, 4))
    with pytest.raises(ConfigError, match="cannot parse quant scheme"):
        MobileDiTConfig(quant=("int8",))


# -- the space and its specs --------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobile_dit", TINY])
def test_labels_and_freeze(name):
    entry = SPACES.get(name)
    cfg, space = entry.config, entry.space()
    assert space.labels[:2] == ["depth", "width"]
    assert space["blocks.0.heads"].options == cfg.heads
    assert space["proj_out.quant"].options == cfg.quant
    assert space.max()["proj_out.quant"] == "fp32"  # cheapest scheme first, full precision last
    for s in (space.min(), space.max(), *space.sample_many(5, rng=7)):
        spec = space.freeze(s)
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert spec.hash == space.freeze(dict(s)).hash == make_space(cfg, name).freeze(s).hash
        blocks = [b for b in spec.blocks if b.kind == "dit_block"]
        assert len(blocks) == s["depth"]
        for i, b in enumerate(blocks):
            d = b.d
            assert d["width"] == s["width"] and d["tokens"] == cfg.tokens
            assert d["heads"] == s[f"blocks.{i}.heads"] and d["dim_head"] == cfg.dim_head
            assert d["ff_inner"] == s[f"blocks.{i}.mlp_ratio"] * s["width"]
            assert d["context_len"] == cfg.context_len and d["context_dim"] == s["width"]
        # Every kept layer is in the spec with the scheme its label chose, and only those.
        layers = {layer.path: layer for layer in spec.layers}
        kept = {p for p in layers}
        quant_labels = {lab[: -len(".quant")] for lab in space.labels if lab.endswith(".quant")}
        assert kept <= quant_labels
        assert len(kept) == 6 + 10 * s["depth"] + 1
        assert all(str(layers[p].quant) == s[p + ".quant"] for p in kept)
        assert layers["adaln_single.linear"].out_features == 6 * s["width"]


@pytest.mark.parametrize("which", ["registered", "no_cross"])
def test_layer_positions_params_and_labels_follow_the_model(which):
    """positions = what the extracted model runs (batch 1); params = its weights; labels."""
    cfg = SPACES.get(TINY).config if which == "registered" else NO_CROSS
    net = _net(cfg)
    space = net.space
    macs = []
    for s in (space.min(), space.max(), *space.sample_many(3, rng=11)):
        spec = space.freeze(s)
        model = net.extract(s)
        set_quant_enabled(model, False)
        got = positions_by_hooks(model, net.example_inputs(batch=1))
        assert got == {layer.path: layer.positions for layer in spec.layers}
        weights = {p: m.weight.numel() for p, m in model.named_modules() if p in got}
        assert weights == {layer.path: layer.params for layer in spec.layers}
        for layer in spec.layers:
            assert layer.label == layer.path + ".quant" and layer.label in space.labels
            assert QuantScheme.parse(spec.sample_dict[layer.label]) == layer.quant
        macs.append(sum(layer.macs for layer in spec.layers))
    assert macs[0] < macs[1] and all(macs[0] <= m <= macs[1] for m in macs)


def test_hash_ignores_labels_of_removed_blocks():
    space = SPACES.get(TINY).space()
    a = space.max() | {"depth": 1}
    b = dict(a)
    b["blocks.1.heads"] = 1
    b["blocks.1.mlp_ratio"] = 2
    b["transformer_blocks.1.attn1.to_q.quant"] = "w4a8:lsq"
    c = dict(a)
    c["blocks.0.heads"] = 1  # a kept block: a different architecture
    assert space.freeze(a).hash == space.freeze(b).hash
    assert space.canonical(b) == space.canonical(a)
    assert space.freeze(c).hash != space.freeze(a).hash


@pytest.mark.parametrize(
    "label, value",
    [
        ("depth", 3),
        ("width", 24),
        ("blocks.1.heads", 3),
        ("blocks.0.mlp_ratio", 3),
        ("transformer_blocks.0.ff.net.2.quant", "w2a2:minmax"),
    ],
)
def test_invalid_samples_name_the_label(label, value):
    net = SPACES.get(TINY).supernet()
    s = net.space.max() | {label: value}
    with pytest.raises(InvalidSampleError, match=label.replace(".", r"\.")):
        net.space.freeze(s)
    with pytest.raises(InvalidSampleError, match=label.replace(".", r"\.")):
        net.extract(s)
    with pytest.raises(InvalidSampleError, match="blocks.9.heads"):
        net.space.validate(net.space.max() | {"blocks.9.heads": 1})


# -- the standalone model -----------------------------------------------------------------
def test_standalone_forward_matches_pixart_signature_and_returns():
    from diffusers import PixArtTransformer2DModel
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    ours = inspect.signature(MobileDiT.forward).parameters
    theirs = inspect.signature(PixArtTransformer2DModel.forward).parameters
    assert list(ours) == list(theirs)
    assert all(ours[k].default == theirs[k].default for k in ours)

    net = SPACES.get(TINY).supernet().eval()
    model = net.extract(net.space.sample(rng=5))
    inputs = net.example_inputs(batch=2, seed=0)
    with torch.no_grad():
        out = model(**inputs)
        assert isinstance(out, Transformer2DModelOutput)
        (y,) = model(**inputs, return_dict=False)
        assert torch.equal(out.sample, y) and y.shape == inputs["hidden_states"].shape
        # Scalar timesteps (int, float, 0-d tensor) broadcast over the batch.
        t = int(inputs["timestep"][0])
        kw = {k: v for k, v in inputs.items() if k != "timestep"}
        same = model(**kw, timestep=torch.tensor([t, t])).sample
        for ts in (t, float(t), torch.tensor(t)):
            torch.testing.assert_close(model(**kw, timestep=ts).sample, same, rtol=0, atol=0)


def test_standalone_round_trips_through_save_pretrained(tmp_path):
    net = SPACES.get(TINY).supernet().eval()
    space = net.space
    s = space.min() | {"depth": 2, "blocks.1.heads": 2}  # lsq and minmax schemes, two blocks
    model = net.extract(s)
    plan = model.config.quant_plan
    assert plan == net.quant_plan(s) and "transformer_blocks.1.attn2.to_k" in plan
    assert any(k.endswith("wq_lsq") for k in model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # learned quantizer parameters must load, not re-initialise
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = MobileDiT.from_pretrained(tmp_path).eval()
    inputs = net.example_inputs(batch=2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, rtol=0, atol=0)


def test_width_slices_tables_and_positional_embedding():
    net = SPACES.get(TINY).supernet().eval()
    s = net.space.max() | {"width": 16}
    model = net.extract(s)
    assert model.scale_shift_table.shape == (2, 16)
    assert model.transformer_blocks[0].scale_shift_table.shape == (6, 16)
    torch.testing.assert_close(
        model.scale_shift_table, net.scale_shift_table[:, :16], rtol=0, atol=0
    )
    # adaLN-single keeps the first 16 rows of each of its six 32-row chunks.
    w = net.adaln_single.linear.weight.view(6, 32, 32)[:, :16, :16].reshape(96, 16)
    torch.testing.assert_close(model.adaln_single.linear.weight, w, rtol=0, atol=0)
    # The sin-cos table is that of a width-16 model, not a slice of the width-32 one.
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    pe = model.pos_embed.pos(16, 4, 4, torch.device("cpu"))
    ref = get_2d_sincos_pos_embed(16, 4, base_size=4).float()
    torch.testing.assert_close(pe[0], ref, rtol=0, atol=0)


def test_cross_attention_needs_a_context():
    net = SPACES.get(TINY).supernet().eval()
    inputs = net.example_inputs(batch=1)
    inputs.pop("encoder_hidden_states")
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        net(**inputs)
