"""`mobile_unet` space: its labels, canonical samples and the spec of a sample (pure).

Labels (n stages; s = 0..n-1 from the highest resolution; u = n-1-s is the
diffusers index of the up block that mirrors stage s)
------------------------------------------------------------------------------
- ``stage.{s}.width``   channels of down stage s, of up block u and of every
  skip between them (tied: they are added / concatenated). Options from
  `MobileUNetConfig.width_options[s]`; multiples of ``norm_num_groups``.
- ``stage.{s}.depth``   ResNet blocks of down stage s (diffusers'
  ``layers_per_block``). Up block u then has depth+1 ResNet blocks: the first
  ``depth`` take skips of this stage's width, the last takes the skip of the
  previous stage's downsampler (or ``conv_in``). Depth keeps the first ``depth``
  blocks of the down stage; in the up block it keeps the first ``depth`` and the
  max model's LAST block (its input has the other skip width), so the
  standalone's ``up_blocks.u.resnets.{depth}`` (and ``attentions.{depth}``) is
  filled from the supernet's ``...resnets.{max depth}`` (`source_path`).
- ``stage.{s}.attn``    transformer blocks in each Transformer2DModel of stage
  s (down and up); the first t are kept; 0 removes the Transformer2DModels of
  that resolution (SnapFusion). Only present when the stage's largest option > 0.
- ``stage.{s}.heads``   attention heads at stage s (whole heads of the fixed
  ``dim_head = max width / max heads`` of the stage). Present with ``.attn``.
- ``mid.heads``         heads of the mid block's transformer (options of the
  last stage, whose max is diffusers' ``attention_head_dim[-1]``).
- ``down.{s}.res{j}.inner``, ``up.{u}.res{j}.inner``, ``mid.res{j}.inner``
  inner width of one ResNet block (conv1 out / norm2 / time_emb_proj out /
  conv2 in) as a ratio of the block's output width, rounded to a multiple of
  ``norm_num_groups`` (at least one group): ``max(G, round(r·width/G)·G)``.
- ``<module path>.quant``  the `QuantScheme` (string) of every conv and linear
  layer of the max model (supernet path), attention projections, GEGLU, proj_in /
  proj_out, time embedding, conv_in / conv_out, samplers and shortcuts included.
  Options are the config's quant options, cheapest first (the default and
  `space.max()` are the last, full precision with the default options).

`freeze(sample)` gives an `ArchSpec` of the standalone architecture (standalone
module paths): stages ``stem`` (conv_in, time embedding), ``down.{s}``, ``mid``,
``up.{u}``, ``head`` (conv_norm_out + conv_out); blocks ``resnet`` (in, inner,
out, H, W, temb, groups, shortcut), ``transformer_io`` (GroupNorm + proj_in /
proj_out: width, H, W, tokens, groups), ``transformer`` (one
BasicTransformerBlock: width, tokens, H, W, heads, dim_head, context_len,
context_dim, ff_inner), ``downsample`` / ``upsample`` (in, out, H, W of the
input), ``conv_in``, ``time_embedding``, ``conv_out``. Each layer's scheme is
the sample's value for the supernet layer it is copied from, and its ``label``
is that supernet layer's ``.quant`` label (for an up block's last ResNet below
max depth it names the max model's last index, not the standalone path); the
supernet's `quant_plan(sample)` lists the same standalone paths (what export
writes). A layer's ``positions`` (per sample) are the output pixels of a conv —
conv_in / conv_out and ResNet convs at their stage's H·W, the downsampler at the
halved resolution, the upsampler at the doubled one — and the tokens of a
linear: H·W for proj_in / proj_out, attention queries / outputs and the GEGLU;
the context length for cross-attention ``to_k`` / ``to_v``; 1 for the time
embedding and ``time_emb_proj``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from nas.quant.scheme import QuantScheme
from nas.space import Choice, SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, Sample, StageSpec
from nas.supernet import QUANT_SUFFIX
from search_spaces.mobile_unet.config import (
    FAMILY_NAME,
    FF_MULT,
    MobileUNetConfig,
    _Active,
    _layout,
    _max_active,
    _resolve,
)

# =========================================================================== spec (pure)
QuantOf = Callable[[str], QuantScheme]


def _layer(
    path: str, kind: str, cin: int, cout: int, src: str, positions: int, q: QuantOf
) -> LayerSpec:
    """A layer at standalone `path` whose scheme is the label of supernet layer `src`.

    `positions`: output pixels (convs) or tokens (linears) of one sample.
    """
    return LayerSpec(path, kind, cin, cout, q(src), positions, src + QUANT_SUFFIX)


def _resnet_spec(
    path: str,
    src: str,
    cin: int,
    inner: int,
    cout: int,
    hw: int,
    temb: int,
    g: int,
    shortcut: bool,
    q: QuantOf,
) -> BlockSpec:
    px = hw * hw
    layers = [
        _layer(f"{path}.conv1", "conv3x3", cin, inner, f"{src}.conv1", px, q),
        _layer(f"{path}.time_emb_proj", "linear", temb, inner, f"{src}.time_emb_proj", 1, q),
        _layer(f"{path}.conv2", "conv3x3", inner, cout, f"{src}.conv2", px, q),
    ]
    if shortcut:
        layers.append(
            _layer(f"{path}.conv_shortcut", "conv1x1", cin, cout, f"{src}.conv_shortcut", px, q)
        )
    dims = {
        "in": cin,
        "inner": inner,
        "out": cout,
        "H": hw,
        "W": hw,
        "temb": temb,
        "groups": g,
        "shortcut": shortcut,
    }
    return BlockSpec(path, "resnet", tuple(dims.items()), tuple(layers))


def _transformer_specs(
    path: str,
    src: str,
    width: int,
    hw: int,
    heads: int,
    dh: int,
    depth: int,
    cfg: MobileUNetConfig,
    q: QuantOf,
) -> list[BlockSpec]:
    tokens, inner, ff = hw * hw, heads * dh, FF_MULT * width
    io = BlockSpec(
        path,
        "transformer_io",
        (
            ("width", width),
            ("H", hw),
            ("W", hw),
            ("tokens", tokens),
            ("groups", cfg.norm_num_groups),
        ),
        (
            _layer(f"{path}.proj_in", "linear", width, width, f"{src}.proj_in", tokens, q),
            _layer(f"{path}.proj_out", "linear", width, width, f"{src}.proj_out", tokens, q),
        ),
    )
    out = [io]
    for k in range(depth):
        p, sp = f"{path}.transformer_blocks.{k}", f"{src}.transformer_blocks.{k}"
        # (name, in, out, positions): queries and outputs run over the block's tokens,
        # cross-attention keys / values over the context.
        rows = []
        for attn, kv_in, kv_n in (
            ("attn1", width, tokens),
            ("attn2", cfg.cross_attention_dim, cfg.context_len),
        ):
            rows += [
                (f"{attn}.to_q", width, inner, tokens),
                (f"{attn}.to_k", kv_in, inner, kv_n),
                (f"{attn}.to_v", kv_in, inner, kv_n),
                (f"{attn}.to_out.0", inner, width, tokens),
            ]
        rows += [("ff.net.0.proj", width, 2 * ff, tokens), ("ff.net.2", ff, width, tokens)]
        layers = [_layer(f"{p}.{n}", "linear", i, o, f"{sp}.{n}", m, q) for n, i, o, m in rows]
        dims = {
            "width": width,
            "tokens": tokens,
            "H": hw,
            "W": hw,
            "heads": heads,
            "dim_head": dh,
            "context_len": cfg.context_len,
            "context_dim": cfg.cross_attention_dim,
            "ff_inner": ff,
        }
        out.append(BlockSpec(p, "transformer", tuple(dims.items()), tuple(layers)))
    return out


def _stages(cfg: MobileUNetConfig, act: _Active, q: QuantOf) -> list[StageSpec]:
    """The standalone architecture of `act` as spec stages.

    Paths are the standalone model's; each layer's scheme is read from the label
    of the supernet layer that fills it (`q` takes that source path).
    """
    lay, g = _layout(cfg), cfg.norm_num_groups
    n, w, temb = lay.n, act.widths, lay.time_embed_dim
    px0 = lay.hw[0] * lay.hw[0]
    stages = [
        StageSpec(
            "stem",
            (
                BlockSpec(
                    "conv_in",
                    "conv_in",
                    (("in", cfg.in_channels), ("out", w[0]), ("H", lay.hw[0]), ("W", lay.hw[0])),
                    (_layer("conv_in", "conv3x3", cfg.in_channels, w[0], "conv_in", px0, q),),
                ),
                BlockSpec(
                    "time_embedding",
                    "time_embedding",
                    (("in", lay.time_proj_dim), ("hidden", temb), ("out", temb)),
                    tuple(
                        _layer(
                            f"time_embedding.{n}", "linear", i, temb, f"time_embedding.{n}", 1, q
                        )
                        for n, i in (("linear_1", lay.time_proj_dim), ("linear_2", temb))
                    ),
                ),
            ),
        )
    ]
    for s in range(n):
        blocks: list[BlockSpec] = []
        hw = lay.hw[s]
        cin = w[0] if s == 0 else w[s - 1]
        for j in range(act.depths[s]):
            p = f"down_blocks.{s}.resnets.{j}"
            sc = lay.shortcut0[s] and j == 0
            blocks.append(
                _resnet_spec(
                    p, p, cin if j == 0 else w[s], act.down_inner[s][j], w[s], hw, temb, g, sc, q
                )
            )
            if act.attn[s] > 0:
                p = f"down_blocks.{s}.attentions.{j}"
                blocks += _transformer_specs(
                    p, p, w[s], hw, act.heads[s], lay.dh[s], act.attn[s], cfg, q
                )
        if s < n - 1:
            p = f"down_blocks.{s}.downsamplers.0"
            half = (hw + 1) // 2
            blocks.append(
                BlockSpec(
                    p,
                    "downsample",
                    (("in", w[s]), ("out", w[s]), ("H", hw), ("W", hw), ("stride", 2)),
                    # stride 2, padding 1: the output is ceil(hw / 2) square
                    (_layer(f"{p}.conv", "conv3x3_s2", w[s], w[s], f"{p}.conv", half * half, q),),
                )
            )
        stages.append(StageSpec(f"down.{s}", tuple(blocks)))
    # mid: resnet → transformer → resnet at the last stage's width and resolution
    hw, wl = lay.hw[-1], w[-1]
    mid = [
        _resnet_spec(
            "mid_block.resnets.0",
            "mid_block.resnets.0",
            wl,
            act.mid_inner[0],
            wl,
            hw,
            temb,
            g,
            False,
            q,
        )
    ]
    mid += _transformer_specs(
        "mid_block.attentions.0",
        "mid_block.attentions.0",
        wl,
        hw,
        act.mid_heads,
        lay.dh[-1],
        cfg.mid_attn_depth,
        cfg,
        q,
    )
    mid.append(
        _resnet_spec(
            "mid_block.resnets.1",
            "mid_block.resnets.1",
            wl,
            act.mid_inner[1],
            wl,
            hw,
            temb,
            g,
            False,
            q,
        )
    )
    stages.append(StageSpec("mid", tuple(mid)))
    for u in range(n):
        s = n - 1 - u
        hw, d = lay.hw[s], act.depths[s]
        prev = w[s + 1] if s < n - 1 else w[-1]
        skip_last = w[s - 1] if s > 0 else w[0]
        blocks = []
        for pos in range(d + 1):
            j_src = pos if pos < d else lay.D[s]  # the last block comes from the max model's last
            cin = (prev if pos == 0 else w[s]) + (skip_last if pos == d else w[s])
            p, sp = f"up_blocks.{u}.resnets.{pos}", f"up_blocks.{u}.resnets.{j_src}"
            blocks.append(
                _resnet_spec(p, sp, cin, act.up_inner[u][pos], w[s], hw, temb, g, True, q)
            )
            if act.attn[s] > 0:
                p, sp = f"up_blocks.{u}.attentions.{pos}", f"up_blocks.{u}.attentions.{j_src}"
                blocks += _transformer_specs(
                    p, sp, w[s], hw, act.heads[s], lay.dh[s], act.attn[s], cfg, q
                )
        if s > 0:
            p = f"up_blocks.{u}.upsamplers.0"
            blocks.append(
                BlockSpec(
                    p,
                    "upsample",
                    (("in", w[s]), ("out", w[s]), ("H", hw), ("W", hw), ("scale", 2)),
                    # nearest ×2 first: the conv runs at the upsampled resolution
                    (_layer(f"{p}.conv", "conv3x3", w[s], w[s], f"{p}.conv", 4 * hw * hw, q),),
                )
            )
        stages.append(StageSpec(f"up.{u}", tuple(blocks)))
    stages.append(
        StageSpec(
            "head",
            (
                BlockSpec(
                    "conv_out",
                    "conv_out",
                    (
                        ("in", w[0]),
                        ("out", cfg.out_channels),
                        ("H", lay.hw[0]),
                        ("W", lay.hw[0]),
                        ("groups", g),
                    ),
                    (_layer("conv_out", "conv3x3", w[0], cfg.out_channels, "conv_out", px0, q),),
                ),
            ),
        )
    )
    return stages


def _float(_: str) -> QuantScheme:
    return QuantScheme()


@cache
def max_layer_paths(cfg: MobileUNetConfig) -> tuple[str, ...]:
    """Module paths of every conv / linear of the max model, in forward order."""
    return tuple(
        layer.path
        for st in _stages(cfg, _max_active(cfg), _float)
        for b in st.blocks
        for layer in b.layers
    )


# =========================================================================== space
def _label_owner(path: str) -> tuple[str, int, int, int | None, int | None] | None:
    """(side, block index, resnet/attention index, transformer block, is_attention) of a layer path.

    Returns None for layers every sample keeps (stem, samplers, mid block, head).
    Encoded as (side, idx, j, k, attn) with attn 1 for attention layers, 0 for resnets.
    """
    parts = path.split(".")
    if parts[0] not in ("down_blocks", "up_blocks") or parts[2] not in ("resnets", "attentions"):
        return None
    k = (
        int(parts[5])
        if parts[2] == "attentions" and len(parts) > 5 and parts[4] == "transformer_blocks"
        else None
    )
    return parts[0], int(parts[1]), int(parts[3]), k, int(parts[2] == "attentions")


def _canonicalizer(
    cfg: MobileUNetConfig, space_defaults: dict[str, Any]
) -> Callable[[Sample], Sample]:
    lay = _layout(cfg)
    n = lay.n
    owners = {p + QUANT_SUFFIX: _label_owner(p) for p in max_layer_paths(cfg)}
    owners = {lab: o for lab, o in owners.items() if o is not None}

    def used(owner: tuple, d: tuple[int, ...], t: tuple[int, ...]) -> bool:
        side, idx, j, k, is_attn = owner
        s = idx if side == "down_blocks" else n - 1 - idx
        if side == "down_blocks":
            keep = j < d[s]
        else:
            keep = j < d[s] or j == lay.D[s]
        if is_attn:
            keep = keep and t[s] > 0 and (k is None or k < t[s])
        return keep

    def canonicalize(sample: Sample) -> Sample:
        out = dict(sample)
        d = tuple(out[f"stage.{s}.depth"] for s in range(n))
        t = tuple(out[f"stage.{s}.attn"] if lay.A[s] > 0 else 0 for s in range(n))
        for s in range(n):
            u = n - 1 - s
            if lay.A[s] > 0 and t[s] == 0:
                out[f"stage.{s}.heads"] = space_defaults[f"stage.{s}.heads"]
            for j in range(d[s], lay.D[s]):
                out[f"down.{s}.res{j}.inner"] = space_defaults[f"down.{s}.res{j}.inner"]
                out[f"up.{u}.res{j}.inner"] = space_defaults[f"up.{u}.res{j}.inner"]
        for lab, owner in owners.items():
            if not used(owner, d, t):
                out[lab] = space_defaults[lab]
        return out

    return canonicalize


def make_space(cfg: MobileUNetConfig, name: str = FAMILY_NAME) -> SearchSpace:
    """The labelled space of `cfg` (labels: see the module docstring)."""
    lay = _layout(cfg)
    n = lay.n
    choices: dict[str, Choice] = {}
    for s in range(n):
        choices[f"stage.{s}.width"] = Choice(cfg.width_options[s])
        choices[f"stage.{s}.depth"] = Choice(cfg.depth_options[s])
        if lay.A[s] > 0:
            choices[f"stage.{s}.attn"] = Choice(cfg.attn_depth_options[s])
            choices[f"stage.{s}.heads"] = Choice(cfg.heads_options[s])
    choices["mid.heads"] = Choice(cfg.heads_options[-1])
    ratios = Choice(cfg.inner_ratios)
    for s in range(n):
        for j in range(lay.D[s]):
            choices[f"down.{s}.res{j}.inner"] = ratios
    choices["mid.res0.inner"] = ratios
    choices["mid.res1.inner"] = ratios
    for u in range(n):
        for j in range(lay.D[n - 1 - u] + 1):
            choices[f"up.{u}.res{j}.inner"] = ratios
    quant = Choice(cfg.quant_options)
    for p in max_layer_paths(cfg):
        choices[p + QUANT_SUFFIX] = quant
    defaults = {lab: c.default for lab, c in choices.items()}

    def builder(space: SearchSpace, sample: Sample) -> ArchSpec:
        act = _resolve(cfg, sample)
        q = _quant_of(cfg, sample)
        meta = (
            ("family", FAMILY_NAME),
            ("sample_size", cfg.sample_size),
            ("in_channels", cfg.in_channels),
            ("out_channels", cfg.out_channels),
            ("context_len", cfg.context_len),
            ("cross_attention_dim", cfg.cross_attention_dim),
        )
        return ArchSpec(
            space.name, space.version, tuple(sample.items()), tuple(_stages(cfg, act, q)), meta
        )

    return SearchSpace(
        choices,
        name=name,
        version=cfg.version,
        builder=builder,
        canonicalize=_canonicalizer(cfg, defaults),
    )


def _quant_of(cfg: MobileUNetConfig, sample: Mapping[str, Any]) -> QuantOf:
    cache: dict[str, QuantScheme] = {}

    def q(src_path: str) -> QuantScheme:
        v = sample[src_path + QUANT_SUFFIX]
        if v not in cache:
            cache[v] = QuantScheme.parse(v)
        return cache[v]

    return q
