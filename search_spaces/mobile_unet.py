"""`mobile_unet`: an elastic Stable-Diffusion-style conditional U-Net — space, supernet, model.

Architecture
------------
At its largest sample the supernet *is* diffusers' `UNet2DConditionModel` (the
latent-diffusion U-Net of Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022) configured with
``down_block_types`` = `CrossAttnDownBlock2D` (`DownBlock2D` at a stage whose
attention depth options are all 0), `UNetMidBlock2DCrossAttn`, up blocks
`CrossAttnUpBlock2D` / `UpBlock2D`, ``use_linear_projection=True``, GEGLU
feed-forward, ``flip_sin_to_cos=True, freq_shift=0``, SiLU, GroupNorm with
``norm_num_groups`` groups. Module paths and parameter names are diffusers'
(``down_blocks.0.resnets.1.conv1``, ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q``,
``down_blocks.0.downsamplers.0.conv``, ``mid_block.attentions.0.proj_in``,
``up_blocks.1.resnets.2.conv_shortcut``, ``conv_in``, ``time_embedding.linear_1``,
``conv_norm_out``, ``conv_out``), so a diffusers state dict maps by name
(`MobileUNetSupernet.load_teacher`; `diffusers_config(config)` gives the
matching `UNet2DConditionModel` kwargs). The numerics follow diffusers 0.42:
ResnetBlock2D (norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 →
SiLU → dropout → conv2, plus a 1×1 shortcut), Transformer2DModel with linear
projections (GroupNorm eps 1e-6 → tokens → proj_in → blocks → proj_out → +x),
BasicTransformerBlock (LayerNorm / self-attn / LayerNorm / cross-attn /
LayerNorm / GEGLU FF, each with a residual), Downsample2D (3×3 conv, stride 2,
padding 1), Upsample2D (nearest ×2, 3×3 conv), the skip stack of
`UNet2DConditionModel.forward`.

What the search shrinks, and where it comes from
------------------------------------------------
Weights are shared once-for-all style (Cai et al., ICLR 2020): a sub-network
uses the first channels / heads / blocks of the largest weights. The
dimensions are those of on-device SD work: fewer ResNet and transformer blocks
per resolution and no attention at high resolution (SnapFusion, Li et al.,
NeurIPS 2023; BK-SDM, Kim et al., 2023), narrower stages and heads, per-block
ResNet inner widths (the channel granularity of PaS, Li et al.,
"Pruning-as-Search", 2022), and a quantization scheme per layer (mixed
precision as in HAQ, Wang et al., CVPR 2019).

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

Fixed parts (documented decisions)
----------------------------------
- Mid block: resnet → transformer → resnet, always present; its width is
  ``stage.{n-1}.width`` (residual), its transformer depth is fixed
  (`MobileUNetConfig.mid_attn_depth`, which must equal the last stage's largest
  attention depth when that stage has attention, as diffusers shares
  ``transformer_layers_per_block[-1]``), its heads are ``mid.heads`` and its two
  ResNet inner widths are searched.
- Time embedding: ``time_proj`` dim = max width of stage 0 and temb = 4× that
  (diffusers' defaults at the max model), never sliced; only their quant schemes
  are searched.
- The transformer token width is the stage width; the attention inner width is
  ``heads × dim_head`` and the GEGLU inner width ``4 × width`` (diffusers' mult).
- Shortcuts: up-block ResNets always have ``conv_shortcut`` (their input is a
  concatenation). A down stage's first ResNet has one whenever the previous
  stage's width options and this stage's allow in ≠ out — even where the max
  model has in == out (e.g. SD's 1280 → 1280) and diffusers has none. Such a
  shortcut is always applied (also when a sample has in == out), so the
  standalone model keeps it (``down_shortcut`` flags). When a teacher lacks it,
  `load_teacher` initialises it as the identity 1×1 conv (weight I, bias 0):
  exact at the max architecture, "first channels, zero-padded" below it.
- Teachers: `load_teacher` reads a local ``save_pretrained`` directory (or a
  pipeline directory's ``unet/``) or takes a model instance, and refuses any
  config key that differs from `diffusers_config(config)` with a `ConfigError`
  naming it. Real SD-1.5 checkpoints have ``use_linear_projection=False``
  (1×1 conv proj_in / proj_out): refused by default, loaded with
  ``allow_conv_projection=True`` (the 1×1 kernels become linear weights; same
  maths up to float rounding).

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

`block_model(kind, dims, batch)` (the family's `Family.block_model`) builds the
float micro-model of one spec block from the classes above at exactly its dims,
with example inputs, for latency tables: ``conv_in`` (ElasticConv2d),
``time_embedding`` (time_proj + TimestepEmbedding), ``resnet`` (ResnetBlock2D),
``transformer_io`` (a Transformer2DModel without blocks: norm, proj_in/out,
residual), ``transformer`` (BasicTransformerBlock), ``downsample`` /
``upsample`` (Downsample2D / Upsample2D), ``conv_out`` (conv_norm_out → SiLU →
conv_out).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import Tensor, nn

from nas.block_models import BlockInputs, Builder, Built, block_model_hook
from nas.diffusers_compat import (
    as_timesteps,
    copy_teacher_state,
    read_teacher_config,
    standalone_hook,
)
from nas.elastic import (
    ChannelSel,
    ElasticAttention,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
    segments,
)
from nas.errors import ConfigError
from nas.quant.layers import QuantMixin
from nas.quant.scheme import QuantScheme
from nas.space import Choice, SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, Sample, StageSpec
from nas.supernet import QUANT_SUFFIX, Family, Supernet, register_space

log = logging.getLogger(__name__)

FAMILY_NAME = "mobile_unet"
RESNET_EPS = 1e-5  # diffusers' norm_eps default, used by every ResnetBlock2D and conv_norm_out
ATTN_NORM_EPS = 1e-6  # Transformer2DModel's GroupNorm
LN_EPS = 1e-5  # BasicTransformerBlock's LayerNorms
FF_MULT = 4  # GEGLU inner width = 4 × token width (diffusers' FeedForward mult)
# Cheapest first, as every Choice lists options smallest first: space.max() is full precision.
DEFAULT_QUANT = ("w4a8:lsq", "w4a16:minmax", "w8a8:minmax", "w8a8:lsq", "fp16", "fp32")


# =========================================================================== config
def _tuple2(name: str, value: Any) -> tuple[tuple[Any, ...], ...]:
    try:
        return tuple(tuple(v) for v in value)
    except TypeError:
        raise ConfigError(
            f"MobileUNetConfig.{name} must be one tuple of options per stage"
        ) from None


@dataclass(frozen=True)
class MobileUNetConfig:
    """One instance of the family: the options of every dimension.

    Per-stage fields hold one tuple of options per stage (smallest first); the
    largest options together are the max (teacher-compatible) architecture.
    """

    sample_size: int = 16
    in_channels: int = 1
    out_channels: int = 1
    cross_attention_dim: int = 64
    context_len: int = 4
    width_options: tuple[tuple[int, ...], ...] = ((32, 48, 64), (64, 96, 128), (128, 192))
    depth_options: tuple[tuple[int, ...], ...] = ((1, 2), (1, 2), (1, 2))
    attn_depth_options: tuple[tuple[int, ...], ...] = ((0, 1), (0, 1, 2), (0, 1))
    heads_options: tuple[tuple[int, ...], ...] = ((1, 2), (2, 4), (2, 4))
    inner_ratios: tuple[float, ...] = (0.5, 0.75, 1.0)
    mid_attn_depth: int = 1
    norm_num_groups: int = 8
    quant_options: tuple[str, ...] = DEFAULT_QUANT
    version: str = "1"

    def __post_init__(self) -> None:
        for name in ("width_options", "depth_options", "attn_depth_options", "heads_options"):
            object.__setattr__(self, name, _tuple2(name, getattr(self, name)))
        object.__setattr__(self, "inner_ratios", tuple(float(r) for r in self.inner_ratios))
        object.__setattr__(self, "quant_options", tuple(str(q) for q in self.quant_options))
        self._validate()

    @property
    def num_stages(self) -> int:
        return len(self.width_options)

    def _validate(self) -> None:
        n, g = self.num_stages, self.norm_num_groups
        if n < 1:
            raise ConfigError("MobileUNetConfig.width_options needs at least one stage")
        for name in ("depth_options", "attn_depth_options", "heads_options"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"MobileUNetConfig.{name} has {len(getattr(self, name))} stages but "
                    f"width_options has {n}; give one tuple of options per stage"
                )
        for name in ("width_options", "depth_options", "attn_depth_options", "heads_options"):
            lo = 0 if name == "attn_depth_options" else 1
            for s, opts in enumerate(getattr(self, name)):
                if not opts or any(
                    not isinstance(o, int) or isinstance(o, bool) or o < lo for o in opts
                ):
                    raise ConfigError(
                        f"MobileUNetConfig.{name}[{s}]={opts}: options are ints >= {lo}"
                    )
                if list(opts) != sorted(set(opts)):
                    raise ConfigError(
                        f"MobileUNetConfig.{name}[{s}]={opts}: list distinct options smallest first"
                    )
        for key in (
            "sample_size",
            "in_channels",
            "out_channels",
            "cross_attention_dim",
            "context_len",
            "norm_num_groups",
        ):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(
                    f"MobileUNetConfig.{key} must be a positive int, got {getattr(self, key)!r}"
                )
        for s, opts in enumerate(self.width_options):
            bad = [w for w in opts if w % g]
            if bad:
                raise ConfigError(
                    f"MobileUNetConfig.width_options[{s}] has {bad}, not multiples of "
                    f"norm_num_groups={g}; GroupNorm needs every width to split into whole groups"
                )
        for s in range(n):
            if self.attn_depth_options[s][-1] > 0 or s == n - 1:
                w, h = self.width_options[s][-1], self.heads_options[s][-1]
                if w % h:
                    raise ConfigError(
                        f"stage {s}: max width {w} is not divisible by max heads {h}; dim_head = "
                        "max width / max heads must be an int (as in diffusers)"
                    )
        r = self.inner_ratios
        if not r or list(r) != sorted(set(r)) or r[0] <= 0 or r[-1] != 1.0:
            raise ConfigError(
                f"MobileUNetConfig.inner_ratios={r}: give distinct ratios in (0, 1], ascending, "
                "ending with 1.0 (the max architecture has inner width = block width)"
            )
        if self.mid_attn_depth < 1:
            raise ConfigError(
                "MobileUNetConfig.mid_attn_depth must be >= 1 (the mid block has attention)"
            )
        last_attn = self.attn_depth_options[-1][-1]
        if last_attn > 0 and last_attn != self.mid_attn_depth:
            raise ConfigError(
                f"MobileUNetConfig.mid_attn_depth={self.mid_attn_depth} but the last stage's max "
                f"attention depth is {last_attn}; diffusers uses transformer_layers_per_block[-1] "
                "for both, so make them equal"
            )
        if self.sample_size % (2 ** (n - 1)):
            raise ConfigError(
                f"MobileUNetConfig.sample_size={self.sample_size} must be divisible by "
                f"2**(stages-1)={2 ** (n - 1)}"
            )
        if not self.quant_options or len(set(self.quant_options)) != len(self.quant_options):
            raise ConfigError(
                f"MobileUNetConfig.quant_options={self.quant_options}: give distinct schemes"
            )
        for q in self.quant_options:
            try:
                QuantScheme.parse(q)
            except ConfigError as e:
                raise ConfigError(f"MobileUNetConfig.quant_options has {q!r}: {e}") from None


# =========================================================================== layout (pure)
@dataclass(frozen=True)
class _Layout:
    """Max architecture facts of a config, computed once."""

    n: int
    W: tuple[int, ...]  # max width per stage
    D: tuple[int, ...]  # max depth per stage
    A: tuple[int, ...]  # max attention depth per stage
    H: tuple[int, ...]  # max heads per stage (last: also the mid block's)
    dh: tuple[int, ...]  # dim_head per stage
    shortcut0: tuple[bool, ...]  # down stage s's first ResNet has conv_shortcut
    hw: tuple[int, ...]  # spatial size per stage

    @property
    def time_proj_dim(self) -> int:
        return self.W[0]

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.W[0]


@cache
def _layout(cfg: MobileUNetConfig) -> _Layout:
    n = cfg.num_stages
    W = tuple(o[-1] for o in cfg.width_options)
    H = tuple(o[-1] for o in cfg.heads_options)
    shortcut0 = tuple(
        s > 0 and any(a != b for a in cfg.width_options[s - 1] for b in cfg.width_options[s])
        for s in range(n)
    )
    return _Layout(
        n=n,
        W=W,
        D=tuple(o[-1] for o in cfg.depth_options),
        A=tuple(o[-1] for o in cfg.attn_depth_options),
        H=H,
        dh=tuple(w // h for w, h in zip(W, H)),
        shortcut0=shortcut0,
        hw=tuple(cfg.sample_size // 2**s for s in range(n)),
    )


def inner_width(ratio: float, width: int, groups: int) -> int:
    """ResNet inner width: ratio × width rounded (half up) to whole groups, at least one group."""
    return max(groups, int(ratio * width / groups + 0.5) * groups)


@dataclass(frozen=True)
class _Active:
    """The concrete dimensions of one (canonical) sample."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    attn: tuple[int, ...]
    heads: tuple[int, ...]
    mid_heads: int
    down_inner: tuple[tuple[int, ...], ...]  # [s][j], j < depth_s
    up_inner: tuple[tuple[int, ...], ...]  # [u][pos], pos <= depth_s (standalone order)
    mid_inner: tuple[int, int]


def _resolve(cfg: MobileUNetConfig, sample: Mapping[str, Any]) -> _Active:
    lay, g = _layout(cfg), cfg.norm_num_groups
    n = lay.n
    w = tuple(int(sample[f"stage.{s}.width"]) for s in range(n))
    d = tuple(int(sample[f"stage.{s}.depth"]) for s in range(n))
    a = tuple(int(sample[f"stage.{s}.attn"]) if lay.A[s] > 0 else 0 for s in range(n))
    h = tuple(int(sample[f"stage.{s}.heads"]) if lay.A[s] > 0 else lay.H[s] for s in range(n))
    down = tuple(
        tuple(inner_width(sample[f"down.{s}.res{j}.inner"], w[s], g) for j in range(d[s]))
        for s in range(n)
    )
    up = []
    for u in range(n):
        s = n - 1 - u
        src = [*range(d[s]), lay.D[s]]
        up.append(tuple(inner_width(sample[f"up.{u}.res{j}.inner"], w[s], g) for j in src))
    mid = (
        inner_width(sample["mid.res0.inner"], w[-1], g),
        inner_width(sample["mid.res1.inner"], w[-1], g),
    )
    return _Active(w, d, a, h, int(sample["mid.heads"]), down, tuple(up), mid)


def _max_active(cfg: MobileUNetConfig) -> _Active:
    lay = _layout(cfg)
    return _Active(
        widths=lay.W,
        depths=lay.D,
        attn=lay.A,
        heads=lay.H,
        mid_heads=lay.H[-1],
        down_inner=tuple((lay.W[s],) * lay.D[s] for s in range(lay.n)),
        up_inner=tuple((lay.W[lay.n - 1 - u],) * (lay.D[lay.n - 1 - u] + 1) for u in range(lay.n)),
        mid_inner=(lay.W[-1], lay.W[-1]),
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


# =========================================================================== modules
class ResnetBlock2D(nn.Module):
    """diffusers' ResnetBlock2D ("default" time embedding, pre-norm, output scale 1).

    x (B, in, H, W) → norm1 → SiLU → conv1 (inner)
    → + time_emb_proj(SiLU(temb))[:, :, None, None] → norm2 → SiLU → dropout → conv2 (out);
    + x (through conv_shortcut 1×1 when present).
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int,
        shortcut: bool,
    ) -> None:
        super().__init__()
        self.norm1 = ElasticGroupNorm(groups, in_channels, eps=RESNET_EPS)
        self.conv1 = ElasticConv2d(in_channels, inner_channels, 3, padding=1)
        self.time_emb_proj = ElasticLinear(temb_channels, inner_channels)
        self.norm2 = ElasticGroupNorm(groups, inner_channels, eps=RESNET_EPS)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = ElasticConv2d(inner_channels, out_channels, 3, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = ElasticConv2d(in_channels, out_channels, 1) if shortcut else None

    def set_active(self, inp: ChannelSel, inner: int, out: int) -> None:
        configure(self.norm1, out=inp)
        configure(self.conv1, inp=inp, out=inner)
        configure(self.time_emb_proj, out=inner)
        configure(self.norm2, out=inner)
        configure(self.conv2, inp=inner, out=out)
        if self.conv_shortcut is not None:
            configure(self.conv_shortcut, inp=inp, out=out)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]  # (B, inner, 1, 1)
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class GEGLU(nn.Module):
    """diffusers' GEGLU: proj → (h, gate) = chunk(2) → h · gelu(gate).

    When elastic, `proj` keeps the first `inner` rows of each half: out segments
    ((0, inner), (max_inner, inner)), so chunk(2) still splits h from gate.
    """

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.inner = inner
        self.proj = ElasticLinear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """ff.net = [GEGLU, Dropout, Linear]: diffusers' layout and names."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), ElasticLinear(inner, dim)])

    def set_active(self, width: int, inner: int) -> None:
        geglu: GEGLU = self.net[0]  # type: ignore[assignment]
        configure(geglu.proj, inp=width, out=segments([(inner, geglu.inner), (inner, geglu.inner)]))
        configure(self.net[2], inp=inner, out=width)

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    """x (B, N, width): x + attn1(norm1 x); x + attn2(norm2 x, context); x + ff(norm3 x)."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.norm1 = ElasticLayerNorm(dim, eps=LN_EPS)
        self.attn1 = ElasticAttention(dim, heads, dim_head)
        self.norm2 = ElasticLayerNorm(dim, eps=LN_EPS)
        self.attn2 = ElasticAttention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        self.norm3 = ElasticLayerNorm(dim, eps=LN_EPS)
        self.ff = FeedForward(dim, FF_MULT * dim)

    def set_active(self, width: int, heads: int) -> None:
        for norm in (self.norm1, self.norm2, self.norm3):
            configure(norm, out=width)
        self.attn1.set_active(width, heads)
        self.attn2.set_active(width, heads)
        self.ff.set_active(width, FF_MULT * width)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    """diffusers' Transformer2DModel, continuous input, linear projections.

    x (B, C, H, W) → GroupNorm(eps 1e-6) → tokens (B, H·W, C) → proj_in → blocks
    → proj_out → (B, C, H, W) → + x. Elastic depth runs the first `active_depth`
    blocks; active depth 0 makes the whole module the identity (attention removed).
    Built with no blocks it runs its I/O only (the ``transformer_io`` block model).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int,
        cross_attention_dim: int,
        groups: int,
    ) -> None:
        super().__init__()
        self.norm = ElasticGroupNorm(groups, channels, eps=ATTN_NORM_EPS)
        self.proj_in = ElasticLinear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(channels, heads, dim_head, cross_attention_dim)
                for _ in range(depth)
            ]
        )
        self.proj_out = ElasticLinear(channels, channels)
        self.active_depth: int | None = None

    def set_active(self, width: int, heads: int, depth: int) -> None:
        configure(self.norm, out=width)
        configure(self.proj_in, inp=width, out=width)
        configure(self.proj_out, inp=width, out=width)
        for blk in self.transformer_blocks[:depth]:
            blk.set_active(width, heads)
        self.active_depth = depth

    def reset_active(self) -> None:
        self.active_depth = None

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        depth = len(self.transformer_blocks) if self.active_depth is None else self.active_depth
        if self.active_depth == 0:
            return x
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        x = self.proj_in(x)
        for blk in self.transformer_blocks[:depth]:
            x = blk(x, context)
        x = self.proj_out(x)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return x + residual


class Downsample2D(nn.Module):
    """3×3 conv, stride 2, padding 1 (diffusers' Downsample2D(use_conv=True, name="op"))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ElasticConv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest ×2 (or to `output_size`), then a 3×3 conv (diffusers' Upsample2D, use_conv)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ElasticConv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(output_size), mode="nearest")
        return self.conv(x)


class TimestepEmbedding(nn.Module):
    """linear_1 → SiLU → linear_2 (diffusers' TimestepEmbedding, no conditioning)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = ElasticLinear(in_dim, dim)
        self.act = nn.SiLU()
        self.linear_2 = ElasticLinear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def _attentions(
    n: int, width: int, heads: int, dim_head: int, depth: int, cross_dim: int, groups: int
) -> nn.ModuleList | None:
    """One Transformer2DModel per resnet of a stage, or none where the stage has no attention."""
    if depth == 0:
        return None
    return nn.ModuleList(
        [Transformer2DModel(width, heads, dim_head, depth, cross_dim, groups) for _ in range(n)]
    )


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (`attentions` present) or DownBlock2D; elastic depth keeps a prefix."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        inner: Sequence[int],
        attn_depth: int,
        heads: int,
        dim_head: int,
        cross_dim: int,
        temb: int,
        groups: int,
        shortcut0: bool,
        add_downsample: bool,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_ch if j == 0 else out_ch, c, out_ch, temb, groups, shortcut0 and j == 0
                )
                for j, c in enumerate(inner)
            ]
        )
        self.attentions = _attentions(
            len(inner), out_ch, heads, dim_head, attn_depth, cross_dim, groups
        )
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)]) if add_downsample else None
        self.active_depth: int | None = None

    def reset_active(self) -> None:
        self.active_depth = None

    def forward(
        self, x: Tensor, temb: Tensor, context: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        depth = len(self.resnets) if self.active_depth is None else self.active_depth
        skips: tuple[Tensor, ...] = ()
        for j in range(depth):
            x = self.resnets[j](x, temb)
            if self.attentions is not None:
                x = self.attentions[j](x, context)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D / UpBlock2D: pop a skip, concat, resnet (+ transformer); upsample.

    With elastic depth d (< max D) it runs resnets 0..d-1 and then resnet D (the
    one built for the other skip width), i.e. d+1 blocks like the standalone's.
    """

    def __init__(
        self,
        prev_ch: int,
        out_ch: int,
        skip_last_ch: int,
        inner: Sequence[int],
        attn_depth: int,
        heads: int,
        dim_head: int,
        cross_dim: int,
        temb: int,
        groups: int,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        last = len(inner) - 1
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    (prev_ch if j == 0 else out_ch) + (skip_last_ch if j == last else out_ch),
                    c,
                    out_ch,
                    temb,
                    groups,
                    True,
                )
                for j, c in enumerate(inner)
            ]
        )
        self.attentions = _attentions(
            len(inner), out_ch, heads, dim_head, attn_depth, cross_dim, groups
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None
        self.active_depth: int | None = None

    def reset_active(self) -> None:
        self.active_depth = None

    def active_indices(self) -> list[int]:
        if self.active_depth is None:
            return list(range(len(self.resnets)))
        return [*range(self.active_depth), len(self.resnets) - 1]

    def forward(
        self,
        x: Tensor,
        skips: tuple[Tensor, ...],
        temb: Tensor,
        context: Tensor,
        upsample_size: Sequence[int] | None = None,
    ) -> Tensor:
        for j in self.active_indices():
            x = torch.cat([x, skips[-1]], dim=1)  # (B, prev + skip, H, W)
            skips = skips[:-1]
            x = self.resnets[j](x, temb)
            if self.attentions is not None:
                x = self.attentions[j](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet → transformer → resnet at the last stage's width."""

    def __init__(
        self,
        ch: int,
        inner: Sequence[int],
        heads: int,
        dim_head: int,
        depth: int,
        cross_dim: int,
        temb: int,
        groups: int,
    ) -> None:
        super().__init__()
        self.attentions = nn.ModuleList(
            [Transformer2DModel(ch, heads, dim_head, depth, cross_dim, groups)]
        )
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, c, ch, temb, groups, False) for c in inner])

    def forward(self, x: Tensor, temb: Tensor, context: Tensor) -> Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


@dataclass(frozen=True)
class _Arch:
    """Exact sizes to build (the supernet at max, a standalone at its sample)."""

    in_channels: int
    out_channels: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    attn: tuple[int, ...]
    heads: tuple[int, ...]
    dim_heads: tuple[int, ...]
    mid_heads: int
    mid_depth: int
    down_inner: tuple[tuple[int, ...], ...]
    up_inner: tuple[tuple[int, ...], ...]
    mid_inner: tuple[int, ...]
    down_shortcut: tuple[bool, ...]
    time_proj_dim: int
    time_embed_dim: int
    cross_attention_dim: int
    groups: int


def _build(m: nn.Module, a: _Arch) -> None:
    """Create the diffusers-named modules of `a` on module `m`."""
    n, w, temb = len(a.widths), a.widths, a.time_embed_dim
    m.conv_in = ElasticConv2d(a.in_channels, w[0], 3, padding=1)
    m.time_proj = Timesteps(a.time_proj_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    m.time_embedding = TimestepEmbedding(a.time_proj_dim, temb)
    m.down_blocks = nn.ModuleList(
        [
            DownBlock(
                w[0] if s == 0 else w[s - 1],
                w[s],
                a.down_inner[s],
                a.attn[s],
                a.heads[s],
                a.dim_heads[s],
                a.cross_attention_dim,
                temb,
                a.groups,
                a.down_shortcut[s],
                s < n - 1,
            )
            for s in range(n)
        ]
    )
    m.mid_block = MidBlock(
        w[-1],
        a.mid_inner,
        a.mid_heads,
        a.dim_heads[-1],
        a.mid_depth,
        a.cross_attention_dim,
        temb,
        a.groups,
    )
    ups = []
    for u in range(n):
        s = n - 1 - u
        ups.append(
            UpBlock(
                w[s + 1] if s < n - 1 else w[-1],
                w[s],
                w[s - 1] if s > 0 else w[0],
                a.up_inner[u],
                a.attn[s],
                a.heads[s],
                a.dim_heads[s],
                a.cross_attention_dim,
                temb,
                a.groups,
                s > 0,
            )
        )
    m.up_blocks = nn.ModuleList(ups)
    m.conv_norm_out = ElasticGroupNorm(a.groups, w[0], eps=RESNET_EPS)
    m.conv_act = nn.SiLU()
    m.conv_out = ElasticConv2d(w[0], a.out_channels, 3, padding=1)


def _run(
    m: nn.Module, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor
) -> Tensor:
    """UNet2DConditionModel.forward's data flow (no masks, adapters or class labels)."""
    n = len(m.down_blocks)
    # Sizes not divisible by 2**(n-1): upsample to the skip's size, as diffusers does.
    forward_upsample_size = any(dim % 2 ** (n - 1) for dim in sample.shape[-2:])
    t_emb = m.time_proj(as_timesteps(timestep, sample.shape[0], sample.device)).to(
        dtype=sample.dtype
    )  # (B, time_proj_dim)
    emb = m.time_embedding(t_emb)  # (B, temb)
    x = m.conv_in(sample)
    skips: tuple[Tensor, ...] = (x,)
    for blk in m.down_blocks:
        x, res = blk(x, emb, encoder_hidden_states)
        skips += res
    x = m.mid_block(x, emb, encoder_hidden_states)
    for i, blk in enumerate(m.up_blocks):
        k = len(blk.active_indices())
        res, skips = skips[-k:], skips[:-k]
        size = skips[-1].shape[2:] if (i < n - 1 and forward_upsample_size) else None
        x = blk(x, res, emb, encoder_hidden_states, size)
    return m.conv_out(m.conv_act(m.conv_norm_out(x)))


def _quant_layers(m: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for path, mod in m.named_modules():
        if isinstance(mod, QuantMixin):
            yield path, mod


def _out_features(mod: nn.Module) -> int:
    if isinstance(mod, nn.Conv2d):
        return mod.out_channels
    return mod.out_features  # type: ignore[return-value]


# =========================================================================== standalone model
class MobileUNet(ModelMixin, ConfigMixin):
    """A concrete mobile U-Net (what `extract` and export produce), loadable with `from_pretrained`.

    Same module paths and numerics as `UNet2DConditionModel` with the settings
    in the module docstring; per-block sizes come from the config. Up-block
    ResNets always have a 1×1 shortcut; a down stage's first ResNet has one when
    `down_shortcut[s]` (None: when its in ≠ out). `quant_plan` (module path →
    scheme string) gives layers their fake-quant scheme; absent layers run float.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: Sequence[int] = (1, 1),
        transformer_layers_per_block: Sequence[int] = (0, 1),
        attention_heads: Sequence[int] = (1, 2),
        attention_head_dims: Sequence[int] = (32, 32),
        mid_attention_heads: int = 2,
        mid_transformer_layers: int = 1,
        down_inner: Sequence[Sequence[int]] | None = None,
        up_inner: Sequence[Sequence[int]] | None = None,
        mid_inner: Sequence[int] | None = None,
        down_shortcut: Sequence[bool] | None = None,
        time_proj_dim: int | None = None,
        time_embed_dim: int | None = None,
        cross_attention_dim: int = 64,
        norm_num_groups: int = 8,
        quant_plan: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        w = tuple(int(x) for x in block_out_channels)
        n = len(w)
        per_stage = {
            "layers_per_block": layers_per_block,
            "transformer_layers_per_block": transformer_layers_per_block,
            "attention_heads": attention_heads,
            "attention_head_dims": attention_head_dims,
        }
        for key, v in per_stage.items():
            if len(v) != n:
                raise ConfigError(
                    f"MobileUNet config {key} has {len(v)} entries; block_out_channels has {n}"
                )
        depths = tuple(int(x) for x in layers_per_block)
        if any(c % norm_num_groups for c in w):
            raise ConfigError(
                f"MobileUNet config block_out_channels={list(w)}: each must be a multiple of "
                f"norm_num_groups={norm_num_groups}"
            )
        down = (
            tuple(tuple(x) for x in down_inner)
            if down_inner is not None
            else tuple((w[s],) * depths[s] for s in range(n))
        )
        up = (
            tuple(tuple(x) for x in up_inner)
            if up_inner is not None
            else tuple((w[n - 1 - u],) * (depths[n - 1 - u] + 1) for u in range(n))
        )
        mid = tuple(mid_inner) if mid_inner is not None else (w[-1], w[-1])
        if [len(x) for x in down] != list(depths):
            raise ConfigError(
                f"MobileUNet config down_inner needs layers_per_block[s] widths per stage, "
                f"got {down}"
            )
        if [len(x) for x in up] != [depths[n - 1 - u] + 1 for u in range(n)]:
            raise ConfigError(
                f"MobileUNet config up_inner needs layers_per_block[n-1-u]+1 widths per up "
                f"block u, got {up}"
            )
        if len(mid) != 2:
            raise ConfigError(f"MobileUNet config mid_inner needs 2 widths, got {mid}")
        shortcut = (
            tuple(bool(x) for x in down_shortcut)
            if down_shortcut is not None
            else tuple(s > 0 and w[s - 1] != w[s] for s in range(n))
        )
        if len(shortcut) != n:
            raise ConfigError(
                f"MobileUNet config down_shortcut has {len(shortcut)} entries; expected {n}"
            )
        for s in range(1, n):
            if w[s - 1] != w[s] and not shortcut[s]:
                raise ConfigError(
                    f"MobileUNet config down_shortcut[{s}] must be true: stage {s} changes width"
                )
        tp = int(time_proj_dim or w[0])
        arch = _Arch(
            in_channels=in_channels,
            out_channels=out_channels,
            widths=w,
            depths=depths,
            attn=tuple(int(x) for x in transformer_layers_per_block),
            heads=tuple(int(x) for x in attention_heads),
            dim_heads=tuple(int(x) for x in attention_head_dims),
            mid_heads=int(mid_attention_heads),
            mid_depth=int(mid_transformer_layers),
            down_inner=down,
            up_inner=up,
            mid_inner=mid,
            down_shortcut=shortcut,
            time_proj_dim=tp,
            time_embed_dim=int(time_embed_dim or 4 * tp),
            cross_attention_dim=cross_attention_dim,
            groups=norm_num_groups,
        )
        _build(self, arch)
        layers = dict(_quant_layers(self))
        plan = dict(quant_plan or {})
        unknown = sorted(set(plan) - set(layers))
        if unknown:
            raise ConfigError(
                f"MobileUNet quant_plan names modules the model does not have: {unknown[:3]}; "
                f"keys are conv/linear module paths such as {next(iter(layers))!r}"
            )
        for path, scheme in plan.items():
            q = QuantScheme.parse(scheme)
            mod = layers[path]
            mod.init_quant(
                [q], _out_features(mod)
            )  # creates learned quantizer params (e.g. wq_lsq)
            mod.quant = q

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[Tensor]:
        """sample (B, C, H, W), timestep (int, float, () or (B,)), context (B, L, ctx dim)."""
        out = _run(self, sample, timestep, encoder_hidden_states)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


# =========================================================================== teacher config
def diffusers_config(cfg: MobileUNetConfig) -> dict[str, Any]:
    """`UNet2DConditionModel` kwargs of the space's max architecture (a compatible teacher)."""
    lay = _layout(cfg)
    n = lay.n
    tl = [lay.A[s] if lay.A[s] > 0 else 1 for s in range(n)]
    tl[-1] = cfg.mid_attn_depth
    return {
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": [
            "CrossAttnDownBlock2D" if lay.A[s] > 0 else "DownBlock2D" for s in range(n)
        ],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": [
            "CrossAttnUpBlock2D" if lay.A[s] > 0 else "UpBlock2D" for s in reversed(range(n))
        ],
        "block_out_channels": list(lay.W),
        "layers_per_block": list(lay.D),
        "transformer_layers_per_block": tl,
        "attention_head_dim": list(lay.H),  # diffusers' historical name for the number of heads
        "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups,
        "norm_eps": RESNET_EPS,
        "use_linear_projection": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }


# Settings a teacher must keep at diffusers' SD defaults (key → accepted values).
_FIXED_TEACHER = {
    "center_input_sample": (False,),
    "flip_sin_to_cos": (True,),
    "freq_shift": (0,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "downsample_padding": (1,),
    "mid_block_scale_factor": (1, 1.0),
    "act_fn": ("silu", "swish"),
    "norm_eps": (RESNET_EPS,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1, 1.0),
    "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
}


def _per_stage(value: Any, n: int, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        vals = list(value)
        if len(vals) != n:
            raise ConfigError(
                f"teacher config {key}={value!r} has {len(vals)} entries; the space has {n} stages"
            )
        out = []
        for v in vals:
            if isinstance(v, (list, tuple)):  # per-layer lists: accept only uniform ones
                if len(set(v)) != 1:
                    raise ConfigError(
                        f"teacher config {key}={value!r}: per-layer values must be uniform"
                    )
                v = v[0]
            out.append(v)
        return out
    return [value] * n


def _teacher_defaults() -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    sig = inspect.signature(UNet2DConditionModel.__init__)
    return {
        k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }


def check_teacher_config(
    cfg: MobileUNetConfig, teacher: Mapping[str, Any], *, allow_conv_projection: bool = False
) -> None:
    """Raise `ConfigError` naming the first key where `teacher` differs from the max model."""
    lay, n = _layout(cfg), _layout(cfg).n
    tc = {**_teacher_defaults(), **{k: v for k, v in teacher.items() if not k.startswith("_")}}
    want = diffusers_config(cfg)

    def fail(key: str, got: Any, expected: Any) -> None:
        raise ConfigError(
            f"teacher config {key}={got!r} does not match the space's max architecture "
            f"({key}={expected!r}). Use a teacher built with diffusers_config(space config), "
            "or a space whose largest options match the teacher."
        )

    for key in ("in_channels", "out_channels", "norm_num_groups"):
        if tc[key] != want[key]:
            fail(key, tc[key], want[key])
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        if list(tc[key]) != want[key]:
            fail(key, tc[key], want[key])
    if _per_stage(tc["layers_per_block"], n, "layers_per_block") != want["layers_per_block"]:
        fail("layers_per_block", tc["layers_per_block"], want["layers_per_block"])
    tl = _per_stage(tc["transformer_layers_per_block"], n, "transformer_layers_per_block")
    heads = _per_stage(tc["attention_head_dim"], n, "attention_head_dim")
    for s in range(n):
        # Stages without attention ignore these, except the last one (the mid block uses it).
        if lay.A[s] > 0 or s == n - 1:
            if tl[s] != want["transformer_layers_per_block"][s]:
                fail(
                    "transformer_layers_per_block",
                    tc["transformer_layers_per_block"],
                    want["transformer_layers_per_block"],
                )
            if heads[s] != lay.H[s]:
                fail("attention_head_dim", tc["attention_head_dim"], want["attention_head_dim"])
    cad = _per_stage(tc["cross_attention_dim"], n, "cross_attention_dim")
    if any(c != cfg.cross_attention_dim for c in cad):
        fail("cross_attention_dim", tc["cross_attention_dim"], cfg.cross_attention_dim)
    oca = tc.get("only_cross_attention", False)
    if any(_per_stage(oca, n, "only_cross_attention")):
        fail("only_cross_attention", oca, False)
    if tc["use_linear_projection"] is not True and not allow_conv_projection:
        fail("use_linear_projection", tc["use_linear_projection"], True)
    ted = tc.get("time_embedding_dim")
    if ted not in (None, lay.time_embed_dim):
        fail("time_embedding_dim", ted, lay.time_embed_dim)
    for key, ok in _FIXED_TEACHER.items():
        if key in tc and tc[key] not in ok:
            fail(key, tc[key], ok[0])
    if tc.get("sample_size") not in (None, cfg.sample_size):
        log.info(
            "teacher sample_size %s differs from the space's %s (not structural)",
            tc.get("sample_size"),
            cfg.sample_size,
        )


def standalone_config(cfg: MobileUNetConfig, space: SearchSpace, sample: Sample) -> dict[str, Any]:
    """Constructor arguments of the `MobileUNet` of `sample`."""
    lay = _layout(cfg)
    s = space.canonical(sample)
    act = _resolve(cfg, s)
    return {
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": list(act.widths),
        "layers_per_block": list(act.depths),
        "transformer_layers_per_block": list(act.attn),
        "attention_heads": list(act.heads),
        "attention_head_dims": list(lay.dh),
        "mid_attention_heads": act.mid_heads,
        "mid_transformer_layers": cfg.mid_attn_depth,
        "down_inner": [list(x) for x in act.down_inner],
        "up_inner": [list(x) for x in act.up_inner],
        "mid_inner": list(act.mid_inner),
        "down_shortcut": list(lay.shortcut0),
        "time_proj_dim": lay.time_proj_dim,
        "time_embed_dim": lay.time_embed_dim,
        "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups,
        "quant_plan": {layer.path: str(layer.quant) for layer in space.freeze(s).layers},
    }


def example_inputs(cfg: MobileUNetConfig, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """Noisy samples, integer timesteps in [0, 1000) and a context of `context_len` tokens."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "sample": torch.randn(
            batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g
        ),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "encoder_hidden_states": torch.randn(
            batch, cfg.context_len, cfg.cross_attention_dim, generator=g
        ),
    }
    return out


# =========================================================================== supernet
class MobileUNetSupernet(Supernet):
    """The weight-sharing supernet of a `MobileUNetConfig` (diffusers layout at max)."""

    standalone_cls = MobileUNet

    def __init__(self, config: MobileUNetConfig, space: SearchSpace | None = None) -> None:
        space = space if space is not None else make_space(config)
        paths = max_layer_paths(config)
        super().__init__(space, {p + QUANT_SUFFIX: p for p in paths})
        self.config = config
        lay = _layout(config)
        act = _max_active(config)
        _build(
            self,
            _Arch(
                in_channels=config.in_channels,
                out_channels=config.out_channels,
                widths=lay.W,
                depths=lay.D,
                attn=lay.A,
                heads=lay.H,
                dim_heads=lay.dh,
                mid_heads=lay.H[-1],
                mid_depth=config.mid_attn_depth,
                down_inner=act.down_inner,
                up_inner=act.up_inner,
                mid_inner=act.mid_inner,
                down_shortcut=lay.shortcut0,
                time_proj_dim=lay.time_proj_dim,
                time_embed_dim=lay.time_embed_dim,
                cross_attention_dim=config.cross_attention_dim,
                groups=config.norm_num_groups,
            ),
        )
        layers = dict(_quant_layers(self))
        if set(layers) != set(paths):
            raise ConfigError(
                "mobile_unet supernet layers and space labels disagree: "
                f"{sorted(set(layers) ^ set(paths))[:4]}"
            )
        for mod in layers.values():
            mod.init_quant(config.quant_options, _out_features(mod))
        self._act: _Active | None = None

    # -- teacher --------------------------------------------------------------------------
    @classmethod
    def from_diffusers(
        cls,
        path_or_model: str | Path | nn.Module,
        config: MobileUNetConfig | str = FAMILY_NAME,
        **kwargs: Any,
    ) -> MobileUNetSupernet:
        """A supernet of `config` (or a registered space name) initialised from a teacher."""
        if isinstance(config, str):
            from nas.supernet import get_space

            entry = get_space(config)
            net = entry.supernet()
        else:
            net = cls(config)
        net.load_teacher(path_or_model, **kwargs)
        return net

    def load_teacher(
        self, path_or_model: str | Path | nn.Module, *, allow_conv_projection: bool = False
    ) -> None:
        """Copy a `UNet2DConditionModel`'s weights by name (local directory or model instance).

        The teacher's config must equal the space's max architecture
        (`diffusers_config`), else `ConfigError` names the key. Shortcut convs
        the teacher lacks (max in == out) become the identity 1×1.
        `allow_conv_projection` accepts ``use_linear_projection=False`` teachers
        (SD-1.5) by reshaping their 1×1 conv proj_in/proj_out weights to linear.
        """
        if isinstance(path_or_model, nn.Module):
            conf = dict(path_or_model.config)  # type: ignore[arg-type]
            check_teacher_config(self.config, conf, allow_conv_projection=allow_conv_projection)
            teacher = path_or_model
        else:
            path, conf = read_teacher_config(path_or_model, "UNet2DConditionModel", "unet")
            check_teacher_config(self.config, conf, allow_conv_projection=allow_conv_projection)
            from diffusers import UNet2DConditionModel

            teacher = UNet2DConditionModel.from_pretrained(  # safetensors only: no unpickling
                path, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
            )
        identity = [
            f"down_blocks.{s}.resnets.0.conv_shortcut" for s in range(_layout(self.config).n)
        ]

        def adapt(v: Tensor, dst: Tensor) -> Tensor:
            if v.dim() == 4 and dst.dim() == 2 and v.shape[2:] == (1, 1):
                return v[:, :, 0, 0]  # conv 1×1 projection → linear
            return v

        state = teacher.state_dict()
        copy_teacher_state(
            self,
            state,
            may_lack=lambda k: any(k.startswith(p + ".") for p in identity),
            adapt=adapt,
        )
        own = self.state_dict()
        with torch.no_grad():
            for p in identity:
                if f"{p}.weight" in own and f"{p}.weight" not in state:
                    w = own[f"{p}.weight"]  # (out, in, 1, 1)
                    w.zero_()
                    k = min(w.shape[0], w.shape[1])
                    w[torch.arange(k), torch.arange(k), 0, 0] = 1.0
                    own[f"{p}.bias"].zero_()
                    log.info("%s: teacher has no shortcut (in == out); initialised as identity", p)
        log.info("loaded teacher weights into %s (%d tensors)", self.space.name, len(state))

    # -- activation -----------------------------------------------------------------------
    def _configure(self, sample: Sample) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_active"):
                m.reset_active()
        cfg, lay = self.config, _layout(self.config)
        act = _resolve(cfg, sample)
        self._act = act
        n, w, W = lay.n, act.widths, lay.W
        configure(self.conv_in, out=w[0])
        for s in range(n):
            blk: DownBlock = self.down_blocks[s]  # type: ignore[assignment]
            d = act.depths[s]
            blk.active_depth = d
            for j in range(d):
                inp = (w[0] if s == 0 else w[s - 1]) if j == 0 else w[s]
                blk.resnets[j].set_active(inp, act.down_inner[s][j], w[s])
                if blk.attentions is not None:
                    blk.attentions[j].set_active(w[s], act.heads[s], act.attn[s])
            if blk.downsamplers is not None:
                configure(blk.downsamplers[0].conv, inp=w[s], out=w[s])
        mid: MidBlock = self.mid_block  # type: ignore[assignment]
        mid.resnets[0].set_active(w[-1], act.mid_inner[0], w[-1])
        mid.attentions[0].set_active(w[-1], act.mid_heads, cfg.mid_attn_depth)
        mid.resnets[1].set_active(w[-1], act.mid_inner[1], w[-1])
        for u in range(n):
            s = n - 1 - u
            blk: UpBlock = self.up_blocks[u]  # type: ignore[no-redef]
            d = act.depths[s]
            blk.active_depth = d if d < lay.D[s] else None
            prev = (w[s + 1], W[s + 1]) if s < n - 1 else (w[-1], W[-1])
            skip_last = (w[s - 1], W[s - 1]) if s > 0 else (w[0], W[0])
            for pos, j in enumerate([*range(d), lay.D[s]]):
                x_in = prev if pos == 0 else (w[s], W[s])
                skip = skip_last if pos == d else (w[s], W[s])
                # concat input: active channels of each part at its max-width offset
                blk.resnets[j].set_active(segments([x_in, skip]), act.up_inner[u][pos], w[s])
                if blk.attentions is not None:
                    blk.attentions[j].set_active(w[s], act.heads[s], act.attn[s])
            if blk.upsamplers is not None:
                configure(blk.upsamplers[0].conv, inp=w[s], out=w[s])
        configure(self.conv_norm_out, out=w[0])
        configure(self.conv_out, inp=w[0])

    def _reset_depth(self) -> None:
        self._act = None

    def source_path(self, path: str) -> str:
        """Standalone ``up_blocks.u.{resnets,attentions}.{d}`` ← supernet index max depth."""
        act = self._act
        if act is None or not path.startswith("up_blocks."):
            return path
        parts = path.split(".")
        if len(parts) < 4 or parts[2] not in ("resnets", "attentions"):
            return path
        lay = _layout(self.config)
        u = int(parts[1])
        s = lay.n - 1 - u
        if int(parts[3]) == act.depths[s] and act.depths[s] < lay.D[s]:
            parts[3] = str(lay.D[s])
        return ".".join(parts)

    def depth_units(self) -> list[tuple[str, str, int]]:
        """(module path, depth label, v): the module runs only when ``sample[label] >= v``.

        The hook of differentiable depth (`nas.policies.depth`), which gates these modules'
        residual contributions. ``stage.{s}.depth``: ResNet j (and its transformer) of the down
        stage and of up block u, for j >= the smallest depth option (up block u always runs its
        last ResNet). ``stage.{s}.attn``: each Transformer2DModel of the stage as a whole (v = 1)
        and its transformer block k >= 1 (v = k + 1).
        """
        cfg, lay = self.config, _layout(self.config)
        units: list[tuple[str, str, int]] = []
        for s in range(lay.n):
            u = lay.n - 1 - s
            blocks = (f"down_blocks.{s}", f"up_blocks.{u}")
            for j in range(cfg.depth_options[s][0], lay.D[s]):
                for blk in blocks:
                    units.append((f"{blk}.resnets.{j}", f"stage.{s}.depth", j + 1))
                    if lay.A[s] > 0:
                        units.append((f"{blk}.attentions.{j}", f"stage.{s}.depth", j + 1))
            if lay.A[s] == 0:
                continue
            for blk, count in zip(blocks, (lay.D[s], lay.D[s] + 1)):
                for j in range(count):
                    for k in range(cfg.attn_depth_options[s][0], lay.A[s]):
                        path = f"{blk}.attentions.{j}"
                        path += f".transformer_blocks.{k}" if k > 0 else ""
                        units.append((path, f"stage.{s}.attn", k + 1))
        return units

    def standalone_config(self, sample: Sample) -> dict[str, Any]:
        return standalone_config(self.config, self.space, sample)

    def example_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
        device = next(self.parameters()).device
        return {k: v.to(device) for k, v in example_inputs(self.config, batch, seed).items()}

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[Tensor]:
        out = _run(self, sample, timestep, encoder_hidden_states)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


# =========================================================================== block models
class TimeEmbeddingBlock(nn.Module):
    """time_proj (sinusoidal, no weights) → time_embedding: timesteps (B,) → temb (B, out)."""

    def __init__(self, proj_dim: int, dim: int) -> None:
        super().__init__()
        self.time_proj = Timesteps(proj_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(proj_dim, dim)

    def forward(self, timestep: Tensor) -> Tensor:
        t = self.time_proj(timestep).to(self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t)


class TransformerIOBlock(nn.Module):
    """A Transformer2DModel without blocks: GroupNorm → proj_in → proj_out → + x.

    Its cost plus one ``transformer`` block model per transformer block is the cost
    of the whole Transformer2DModel.
    """

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.attn = Transformer2DModel(width, 1, width, 0, width, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, None)


class HeadBlock(nn.Module):
    """conv_norm_out → SiLU → conv_out, the standalone model's last modules."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.conv_norm_out = ElasticGroupNorm(groups, cin, eps=RESNET_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = ElasticConv2d(cin, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


def _bm_conv_in(d: dict[str, Any], x: BlockInputs) -> Built:
    return ElasticConv2d(d["in"], d["out"], 3, padding=1), (x.randn(d["in"], d["H"], d["W"]),)


def _bm_time_embedding(d: dict[str, Any], x: BlockInputs) -> Built:
    if d["hidden"] != d["out"]:
        raise ConfigError(f"time_embedding dims {d}: hidden must equal out (linear_2 is square)")
    return TimeEmbeddingBlock(d["in"], d["out"]), (x.steps(),)


def _bm_resnet(d: dict[str, Any], x: BlockInputs) -> Built:
    m = ResnetBlock2D(d["in"], d["inner"], d["out"], d["temb"], d["groups"], bool(d["shortcut"]))
    return m, (x.randn(d["in"], d["H"], d["W"]), x.randn(d["temb"]))


def _bm_transformer_io(d: dict[str, Any], x: BlockInputs) -> Built:
    return TransformerIOBlock(d["width"], d["groups"]), (x.randn(d["width"], d["H"], d["W"]),)


def _bm_transformer(d: dict[str, Any], x: BlockInputs) -> Built:
    if d["ff_inner"] != FF_MULT * d["width"]:
        raise ConfigError(f"transformer dims {d}: ff_inner must be {FF_MULT} × width")
    m = BasicTransformerBlock(d["width"], d["heads"], d["dim_head"], d["context_dim"])
    return m, (x.randn(d["tokens"], d["width"]), x.randn(d["context_len"], d["context_dim"]))


def _bm_downsample(d: dict[str, Any], x: BlockInputs) -> Built:
    if d["in"] != d["out"]:
        raise ConfigError(f"downsample dims {d}: Downsample2D keeps its channels (in == out)")
    return Downsample2D(d["in"]), (x.randn(d["in"], d["H"], d["W"]),)


def _bm_upsample(d: dict[str, Any], x: BlockInputs) -> Built:
    if d["in"] != d["out"]:
        raise ConfigError(f"upsample dims {d}: Upsample2D keeps its channels (in == out)")
    return Upsample2D(d["in"]), (x.randn(d["in"], d["H"], d["W"]),)


def _bm_conv_out(d: dict[str, Any], x: BlockInputs) -> Built:
    return HeadBlock(d["in"], d["out"], d["groups"]), (x.randn(d["in"], d["H"], d["W"]),)


_BLOCK_MODELS: dict[str, Builder] = {
    "conv_in": _bm_conv_in,
    "time_embedding": _bm_time_embedding,
    "resnet": _bm_resnet,
    "transformer_io": _bm_transformer_io,
    "transformer": _bm_transformer,
    "downsample": _bm_downsample,
    "upsample": _bm_upsample,
    "conv_out": _bm_conv_out,
}


# The float micro-model of one spec block and its example inputs (batch `batch`).
#
# Built of the classes the standalone model uses, at exactly `dims` (a `BlockSpec.d`),
# unconfigured (no quant schemes), in eval mode; weights and inputs are seeded 0.
# ``module(*inputs)`` runs what the standalone model runs for that block — resnet:
# (x (B, in, H, W), temb (B, temb)); transformer: (tokens (B, N, width), context (B, M,
# context_dim)); transformer_io: x (B, width, H, W); time_embedding: timesteps (B,);
# conv_in / downsample / upsample / conv_out: x (B, in, H, W).
block_model = block_model_hook(FAMILY_NAME, _BLOCK_MODELS)


# =========================================================================== registry
def make_supernet(cfg: MobileUNetConfig, space: SearchSpace) -> MobileUNetSupernet:
    return MobileUNetSupernet(cfg, space)


FAMILY = Family(
    FAMILY_NAME,
    make_space,
    make_supernet,
    MobileUNet,
    block_model,
    standalone_hook(MobileUNet, standalone_config, example_inputs),
)

#: digits at 16×16 (1 channel), 3 stages: 16×16 / 8×8 / 4×4.
MOBILE_UNET = MobileUNetConfig()

#: SD-1.5-sized: 64×64 latents, 4 channels, max widths (320, 640, 1280, 1280), heads 8
#: (dim_head 40/80/160), no attention at the last stage, mid transformer depth 1.
MOBILE_UNET_SD15 = MobileUNetConfig(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    cross_attention_dim=768,
    context_len=77,
    width_options=((192, 256, 320), (384, 512, 640), (768, 1024, 1280), (768, 1024, 1280)),
    depth_options=((1, 2),) * 4,
    attn_depth_options=((0, 1), (0, 1), (0, 1), (0,)),
    heads_options=((8,),) * 4,
    inner_ratios=(0.5, 0.75, 1.0),
    mid_attn_depth=1,
    norm_num_groups=32,
)

#: tiny: 8×8, 2 stages; no attention at 8×8, attention (0, 1) at 4×4.
TEST_MOBILE_UNET = MobileUNetConfig(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    cross_attention_dim=8,
    context_len=3,
    width_options=((8, 16), (16, 24)),
    depth_options=((1, 2), (1, 2)),
    attn_depth_options=((0,), (0, 1)),
    heads_options=((1,), (1, 2)),
    inner_ratios=(0.5, 1.0),
    mid_attn_depth=1,
    norm_num_groups=4,
)

#: tiny with attention depth (0, 1, 2) at 8×8, fixed attention at 4×4, none at 2×2
#: (like SD's last stage) and equal max widths of stages 1 and 2 (identity shortcut).
TEST_MOBILE_UNET_ATTN = MobileUNetConfig(
    sample_size=8,
    in_channels=2,
    out_channels=2,
    cross_attention_dim=12,
    context_len=2,
    width_options=((8, 16), (16, 24), (16, 24)),
    depth_options=((1, 2), (1,), (1, 2)),
    attn_depth_options=((0, 1, 2), (1,), (0,)),
    heads_options=((1, 2), (2, 4), (1, 2)),
    inner_ratios=(0.5, 0.75, 1.0),
    mid_attn_depth=1,
    norm_num_groups=4,
)

register_space("mobile_unet", FAMILY, MOBILE_UNET)
register_space("mobile_unet_sd15", FAMILY, MOBILE_UNET_SD15)
register_space("test_mobile_unet", FAMILY, TEST_MOBILE_UNET)
register_space("test_mobile_unet_attn", FAMILY, TEST_MOBILE_UNET_ATTN)

__all__ = [
    "FAMILY",
    "MobileUNet",
    "MobileUNetConfig",
    "MobileUNetSupernet",
    "block_model",
    "check_teacher_config",
    "diffusers_config",
    "inner_width",
    "make_space",
    "max_layer_paths",
]
