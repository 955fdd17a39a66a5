"""Mobile DiT: a PixArt-α style diffusion transformer searched over width, depth, heads,
MLP ratio and a quantization scheme per linear layer.

Architectures followed
----------------------
- DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023): patchify
  with a fixed 2-D sin-cos positional embedding, a stack of transformer blocks, a modulated
  final layer and unpatchify.
- PixArt-α (Chen et al., "PixArt-α: Fast Training of Diffusion Transformer", ICLR 2024,
  §2.3): *adaLN-single* — one timestep MLP and one ``dim → 6·dim`` linear shared by all
  blocks, plus a learned per-block ``scale_shift_table`` (6, dim); cross-attention to a
  projected caption (here a text or class embedding).
- Once-for-all (Cai et al., ICLR 2020) weight sharing: every sub-network uses the first
  channels / heads / blocks of the largest weights (`nas.elastic`).

At its largest architecture the supernet *is* diffusers'
``PixArtTransformer2DModel(norm_type="ada_norm_single", activation_fn="gelu-approximate",
use_additional_conditions=False)``: same module paths and parameter names
(``pos_embed.proj``, ``adaln_single.emb.timestep_embedder.linear_{1,2}``,
``adaln_single.linear``, ``caption_projection.linear_{1,2}``,
``transformer_blocks.<i>.{attn1,attn2}.{to_q,to_k,to_v,to_out.0}``,
``transformer_blocks.<i>.ff.net.{0.proj,2}``, ``transformer_blocks.<i>.scale_shift_table``,
``scale_shift_table``, ``proj_out``), same numerics, so a PixArt state dict maps by name
(`MobileDiTSupernet.load_teacher`).

Labels of the space
-------------------
``depth``
    number of transformer blocks kept (the first ``depth``; later ones are skipped).
``width``
    hidden width of the whole model. One label: every block adds its output to the
    residual stream, and the patch embedding, adaLN-single, caption projection and final
    layer all read or write that stream. The 2-D sin-cos positional embedding is computed
    for the active width (cached per width), exactly as a standalone model of that width.
``blocks.<i>.heads``
    attention heads of block ``i`` (self- and cross-attention alike). ``dim_head`` is fixed
    at ``max(widths) // max(heads)``; heads are sliced whole (the first ``heads`` heads).
``blocks.<i>.mlp_ratio``
    feed-forward inner width of block ``i`` is ``mlp_ratio × width`` (the active width; the
    first ``inner`` units of ``ff.net.0.proj`` / ``ff.net.2`` are kept). The largest ratio
    must be 4 for PixArt's ``FeedForward(mult=4)`` to be the max architecture; the config
    refuses options that give a non-integer inner width.
``<module path>.quant``
    the quant scheme of that linear / conv: ``pos_embed.proj``, the timestep embedder's two
    linears, ``adaln_single.linear``, ``caption_projection.linear_{1,2}``, every attention
    projection, ``ff.net.0.proj``, ``ff.net.2`` and ``proj_out``. Options are the config's
    quant options, listed cheapest first (so ``space.max()`` is full precision).

Labels of blocks a sample's depth removes are reset to their defaults by ``canonicalize``.

Decisions
---------
- ``use_additional_conditions`` (PixArt's resolution / aspect-ratio embedders) is not
  supported: the config and `load_teacher` refuse it with a `ConfigError`.
- ``out_channels`` defaults to ``in_channels`` (ε-prediction, no learned σ); set it to
  ``2 × in_channels`` for a PixArt-style learned-σ head. Other values are refused.
- The feed-forward inner width follows the *active* width (``mlp_ratio × width``), like a
  standalone DiT of that width; the attention inner width is ``heads × dim_head`` and does
  not depend on the width.
- With ``cross_attention=False`` the model has neither ``caption_projection`` nor ``attn2``
  (a PixArt with ``caption_channels=None, cross_attention_dim=None``).
- In the spec, the patchify conv ``pos_embed.proj`` (kernel = stride = p) is listed as a
  ``linear`` over flattened patches (in = C·p²), so its params and MACs are exact.

Specs and block models
----------------------
``space.freeze(sample)`` gives stages ``embed`` (``patch_embed``, ``adaln_single``,
``caption_projection``), ``blocks`` (one ``dit_block`` per kept block) and ``out``
(``dit_final``). Each layer's ``label`` is its path + ``.quant``; its ``positions`` (per
sample) are the tokens it runs over: the patch count for the patch conv, attention
projections, feed-forward and ``proj_out``; the context length for ``to_k`` / ``to_v`` of
cross-attention and the caption projection; 1 for the timestep MLP and adaLN linear.
`block_model(kind, dims, batch)` (the family's `Family.block_model`) builds the float
micro-model of one spec block from the classes below at exactly its dims, with example
inputs, for latency tables.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from nas.block_models import BlockInputs, Builder, Built, block_model_hook
from nas.diffusers_compat import (
    as_timesteps,
    copy_teacher_state,
    read_teacher_config,
    standalone_hook,
)
from nas.elastic import (
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
    segments,
)
from nas.errors import ConfigError
from nas.quant.layers import QuantArg
from nas.quant.scheme import QuantScheme
from nas.space import Choice, SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, Sample, StageSpec
from nas.supernet import QUANT_SUFFIX, Family, Supernet, register_space

log = logging.getLogger(__name__)

FAMILY_NAME = "mobile_dit"
# PixArt's fixed sizes: sinusoidal timestep features (Timesteps(256)), LayerNorm eps.
TIME_FREQ_DIM = 256
NORM_EPS = 1e-6
# Cheapest first: `space.min()` is the most compressed, `space.max()` full precision.
DEFAULT_QUANT = ("w4a8:lsq", "w4a16:minmax", "w8a8:minmax", "w8a8:lsq", "fp16", "fp32")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MobileDiTConfig:
    """One instance of the family: fixed sizes and the options of every label.

    Options are listed smallest first. ``context_len`` is the length of the caption /
    class-embedding sequence the model is run with (it enters latency keys only).
    """

    sample_size: int = 16
    patch_size: int = 2
    in_channels: int = 1
    caption_channels: int = 64
    context_len: int = 4
    widths: tuple[int, ...] = (64, 96, 128)
    depths: tuple[int, ...] = (4, 5, 6, 7, 8)
    heads: tuple[int, ...] = (2, 4)
    mlp_ratios: tuple[int | float, ...] = (2, 3, 4)
    cross_attention: bool = True
    quant: tuple[str, ...] = DEFAULT_QUANT
    out_channels: int | None = None
    use_additional_conditions: bool = False
    version: str = "1"

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "heads", "mlp_ratios", "quant"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.use_additional_conditions:
            raise ConfigError(
                "MobileDiTConfig.use_additional_conditions=True is not supported (PixArt's "
                "resolution / aspect-ratio embedders); set it to False"
            )
        for name in ("sample_size", "patch_size", "in_channels", "context_len"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MobileDiTConfig.{name} must be a positive int")
        if self.sample_size % self.patch_size:
            raise ConfigError(
                f"MobileDiTConfig.sample_size={self.sample_size} is not a multiple of "
                f"patch_size={self.patch_size}; pick sizes that tile the image"
            )
        if self.cross_attention and (self.caption_channels is None or self.caption_channels < 1):
            raise ConfigError(
                "MobileDiTConfig.caption_channels must be a positive int when cross_attention "
                "is on (it is the channel count of the caption / class embedding)"
            )
        if self.out_channels not in (None, self.in_channels, 2 * self.in_channels):
            raise ConfigError(
                f"MobileDiTConfig.out_channels={self.out_channels}; use None / in_channels "
                f"({self.in_channels}, ε-prediction) or 2×in_channels ({2 * self.in_channels}, "
                "learned σ as in PixArt)"
            )
        for name in ("widths", "depths", "heads", "mlp_ratios"):
            opts = getattr(self, name)
            if not opts or any(o <= 0 for o in opts) or list(opts) != sorted(set(opts)):
                raise ConfigError(
                    f"MobileDiTConfig.{name}={opts} must be distinct positive numbers in "
                    "increasing order (smallest first)"
                )
        bad = [w for w in self.widths if w % 4]
        if bad:
            raise ConfigError(
                f"MobileDiTConfig.widths {bad} are not multiples of 4; the 2-D sin-cos "
                "positional embedding splits the width in four (sin/cos × rows/columns)"
            )
        if self.max_width % self.max_heads:
            raise ConfigError(
                f"max width {self.max_width} is not divisible by max heads {self.max_heads}; "
                "dim_head = max width / max heads must be an integer"
            )
        for r in self.mlp_ratios:
            for w in self.widths:
                if abs(r * w - round(r * w)) > 1e-9:
                    raise ConfigError(
                        f"mlp ratio {r} × width {w} = {r * w} is not an integer; choose ratios "
                        "that give integer feed-forward widths for every width option"
                    )
        if not self.quant:
            raise ConfigError("MobileDiTConfig.quant needs at least one scheme, e.g. ('fp32',)")
        for q in self.quant:
            QuantScheme.parse(q)  # raises a ConfigError that names the bad string

    @property
    def max_width(self) -> int:
        return self.widths[-1]

    @property
    def max_heads(self) -> int:
        return self.heads[-1]

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def dim_head(self) -> int:
        return self.max_width // self.max_heads

    @property
    def out_ch(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def tokens(self) -> int:
        return (self.sample_size // self.patch_size) ** 2

    @property
    def interpolation_scale(self) -> int:
        # PixArtTransformer2DModel's default when its config leaves it None.
        return max(self.sample_size // 64, 1)


def ff_inner(ratio: float, width: int) -> int:
    """Feed-forward inner width of a block: mlp_ratio × active width (an integer)."""
    return round(ratio * width)


# ---------------------------------------------------------------------------------------
# Layers of one architecture (shared by the space builder, quant labels and the model)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Arch:
    """The resolved structure of one sample (or of the max architecture)."""

    width: int
    heads: tuple[int, ...]  # per kept block
    inner: tuple[int, ...]  # ff inner width per kept block
    ratios: tuple[int | float, ...] = field(default=())

    @property
    def depth(self) -> int:
        return len(self.heads)


# (path, kind, in, out, positions): positions = tokens (or output pixels) of one sample.
Row = tuple[str, str, int, int, int]


def _block_layers(
    prefix: str,
    width: int,
    heads: int,
    dim_head: int,
    inner: int,
    cross: bool,
    tokens: int = 1,
    context_len: int = 1,
) -> list[Row]:
    """Every linear of one transformer block; queries, outputs and the FF run over the
    image tokens, cross-attention keys / values over the (projected) context."""
    att = heads * dim_head
    out = []
    for name in ("attn1", "attn2") if cross else ("attn1",):
        kv_n = context_len if name == "attn2" else tokens
        out += [
            (f"{prefix}.{name}.to_q", "linear", width, att, tokens),
            (f"{prefix}.{name}.to_k", "linear", width, att, kv_n),
            (f"{prefix}.{name}.to_v", "linear", width, att, kv_n),
            (f"{prefix}.{name}.to_out.0", "linear", att, width, tokens),
        ]
    out += [
        (f"{prefix}.ff.net.0.proj", "linear", width, inner, tokens),
        (f"{prefix}.ff.net.2", "linear", inner, width, tokens),
    ]
    return out


def _stem_layers(cfg: MobileDiTConfig, width: int) -> dict[str, list[Row]]:
    """Layers outside the blocks, grouped by the spec block they belong to.

    The patchify conv (kernel = stride = p, no padding) is a linear over flattened
    p×p patches: in = C·p², one position per patch, so params and MACs are exact.
    """
    p, n, m = cfg.patch_size, cfg.tokens, cfg.context_len
    groups: dict[str, list[Row]] = {
        "pos_embed": [("pos_embed.proj", "linear", cfg.in_channels * p * p, width, n)],
        "adaln_single": [
            ("adaln_single.emb.timestep_embedder.linear_1", "linear", TIME_FREQ_DIM, width, 1),
            ("adaln_single.emb.timestep_embedder.linear_2", "linear", width, width, 1),
            ("adaln_single.linear", "linear", width, 6 * width, 1),
        ],
    }
    if cfg.cross_attention:
        groups["caption_projection"] = [
            ("caption_projection.linear_1", "linear", cfg.caption_channels, width, m),
            ("caption_projection.linear_2", "linear", width, width, m),
        ]
    groups["proj_out"] = [("proj_out", "linear", width, p * p * cfg.out_ch, n)]
    return groups


def _all_layer_paths(cfg: MobileDiTConfig) -> list[str]:
    """Every conv / linear of the max architecture, in module order."""
    stem = _stem_layers(cfg, cfg.max_width)
    groups = ("pos_embed", "adaln_single", "caption_projection")
    paths = [p for g in groups for p, *_ in stem.get(g, [])]
    for i in range(cfg.max_depth):
        prefix = f"transformer_blocks.{i}"
        rows = _block_layers(
            prefix, cfg.max_width, cfg.max_heads, cfg.dim_head, 1, cfg.cross_attention
        )
        paths += [p for p, *_ in rows]
    return paths + ["proj_out"]


def _block_labels(i: int) -> tuple[str, str]:
    return f"blocks.{i}.heads", f"blocks.{i}.mlp_ratio"


def _resolve(cfg: MobileDiTConfig, sample: Mapping[str, Any]) -> _Arch:
    w, d = int(sample["width"]), int(sample["depth"])
    heads, ratios = [], []
    for i in range(d):
        h, r = _block_labels(i)
        heads.append(int(sample[h]))
        ratios.append(sample[r])
    return _Arch(w, tuple(heads), tuple(ff_inner(r, w) for r in ratios), tuple(ratios))


# ---------------------------------------------------------------------------------------
# Search space
# ---------------------------------------------------------------------------------------
def make_space(cfg: MobileDiTConfig, name: str) -> SearchSpace:
    """The flat space: depth, width, per-block heads / mlp ratio, one quant label per layer."""
    choices: dict[str, Choice] = {"depth": Choice(cfg.depths), "width": Choice(cfg.widths)}
    for i in range(cfg.max_depth):
        h, r = _block_labels(i)
        choices[h] = Choice(cfg.heads)
        choices[r] = Choice(cfg.mlp_ratios)
    for path in _all_layer_paths(cfg):
        choices[path + QUANT_SUFFIX] = Choice(cfg.quant)

    def canonicalize(sample: Sample) -> Sample:
        out = dict(sample)
        for i in range(int(sample["depth"]), cfg.max_depth):
            prefix = f"transformer_blocks.{i}."
            for lab in (*_block_labels(i), *(k for k in out if k.startswith(prefix))):
                out[lab] = choices[lab].default
        return out

    def builder(space: SearchSpace, sample: Sample) -> ArchSpec:
        return _freeze(cfg, space, sample)

    return SearchSpace(
        choices, name=name, version=cfg.version, builder=builder, canonicalize=canonicalize
    )


def _layer_specs(rows: list[Row], sample: Sample) -> tuple[LayerSpec, ...]:
    """Supernet and standalone paths agree here: each layer's label is its path + .quant."""
    return tuple(
        LayerSpec(p, kind, i, o, QuantScheme.parse(sample[p + QUANT_SUFFIX]), n, p + QUANT_SUFFIX)
        for p, kind, i, o, n in rows
    )


def _freeze(cfg: MobileDiTConfig, space: SearchSpace, sample: Sample) -> ArchSpec:
    """The full spec of a (canonical) sample: every block with its dims, every layer."""
    a = _resolve(cfg, sample)
    w, n = a.width, cfg.tokens
    grid = cfg.sample_size // cfg.patch_size
    stem = _stem_layers(cfg, w)
    embed = [
        BlockSpec(
            "pos_embed",
            "patch_embed",
            (
                ("in_channels", cfg.in_channels),
                ("width", w),
                ("patch_size", cfg.patch_size),
                ("H", cfg.sample_size),
                ("W", cfg.sample_size),
                ("tokens", n),
            ),
            _layer_specs(stem["pos_embed"], sample),
        ),
        BlockSpec(
            "adaln_single",
            "adaln_single",
            (("freq_dim", TIME_FREQ_DIM), ("width", w), ("out", 6 * w)),
            _layer_specs(stem["adaln_single"], sample),
        ),
    ]
    if cfg.cross_attention:
        embed.append(
            BlockSpec(
                "caption_projection",
                "caption_projection",
                (
                    ("caption_channels", cfg.caption_channels),
                    ("width", w),
                    ("context_len", cfg.context_len),
                ),
                _layer_specs(stem["caption_projection"], sample),
            )
        )
    blocks = []
    for i in range(a.depth):
        prefix = f"transformer_blocks.{i}"
        rows = _block_layers(
            prefix,
            w,
            a.heads[i],
            cfg.dim_head,
            a.inner[i],
            cfg.cross_attention,
            n,
            cfg.context_len,
        )
        blocks.append(
            BlockSpec(
                prefix,
                "dit_block",
                (
                    ("width", w),
                    ("tokens", n),
                    ("heads", a.heads[i]),
                    ("dim_head", cfg.dim_head),
                    ("mlp_ratio", a.ratios[i]),
                    ("ff_inner", a.inner[i]),
                    ("cross_attention", cfg.cross_attention),
                    ("context_len", cfg.context_len if cfg.cross_attention else 0),
                    ("context_dim", w if cfg.cross_attention else 0),
                ),
                _layer_specs(rows, sample),
            )
        )
    final = BlockSpec(
        "proj_out",
        "dit_final",
        (
            ("width", w),
            ("tokens", n),
            ("grid", grid),
            ("patch_size", cfg.patch_size),
            ("out_channels", cfg.out_ch),
        ),
        _layer_specs(stem["proj_out"], sample),
    )
    return ArchSpec(
        space.name,
        space.version,
        tuple(sample.items()),
        (
            StageSpec("embed", tuple(embed)),
            StageSpec("blocks", tuple(blocks)),
            StageSpec("out", (final,)),
        ),
        (("family", FAMILY_NAME), ("depth", a.depth), ("width", w)),
    )


# ---------------------------------------------------------------------------------------
# Modules (the same classes build the supernet at max size and the standalone exactly)
# ---------------------------------------------------------------------------------------
def _q(quant: Mapping[str, QuantArg] | QuantArg, path: str) -> QuantArg:
    """The quant argument of layer `path`: a candidate tuple (supernet) or a plan entry."""
    return quant.get(path) if isinstance(quant, Mapping) else quant


def _bias_from_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """diffusers' mask handling: (B, M) keep=1/drop=0 → additive bias (B, 1, M)."""
    if mask is not None and mask.ndim == 2:
        mask = ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
    return mask


class PatchEmbed(nn.Module):
    """diffusers' `PatchEmbed` (sincos, no norm) over an elastic patch conv.

    The positional embedding is not a parameter: it is computed for the active width
    and grid (cached), which is what a standalone model of that width holds.
    """

    def __init__(
        self,
        sample_size: int,
        patch_size: int,
        in_channels: int,
        width: int,
        interpolation_scale: float,
        quant: QuantArg = None,
    ) -> None:
        super().__init__()
        self.proj = ElasticConv2d(
            in_channels, width, kernel_size=patch_size, stride=patch_size, bias=True, quant=quant
        )
        self.patch_size = patch_size
        self.base_size = sample_size // patch_size
        self.interpolation_scale = interpolation_scale
        self._cache: dict[tuple[int, int, int, str], Tensor] = {}

    def set_active(self, width: int | None) -> None:
        configure(self.proj, out=width)

    def pos(self, width: int, gh: int, gw: int, device: torch.device) -> Tensor:
        """(1, gh·gw, width) float32 sin-cos embedding, computed as diffusers does (on CPU)."""
        key = (width, gh, gw, str(device))
        t = self._cache.get(key)
        if t is None:
            t = get_2d_sincos_pos_embed(
                width,
                (gh, gw) if gh != gw else gh,
                base_size=self.base_size,
                interpolation_scale=self.interpolation_scale,
                output_type="pt",
            )
            t = t.float().unsqueeze(0).to(device)
            self._cache[key] = t
        return t

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) → tokens (B, N, width), N = (H/p)·(W/p)
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        x = self.proj(x).flatten(2).transpose(1, 2)
        return (x + self.pos(x.shape[-1], gh, gw, x.device)).to(x.dtype)


class TimestepEmbedding(nn.Module):
    """diffusers' `TimestepEmbedding`: linear_1 → SiLU → linear_2."""

    def __init__(self, width: int, quant: Mapping[str, QuantArg] | QuantArg, prefix: str) -> None:
        super().__init__()
        self.linear_1 = ElasticLinear(TIME_FREQ_DIM, width, quant=_q(quant, f"{prefix}.linear_1"))
        self.act = nn.SiLU()
        self.linear_2 = ElasticLinear(width, width, quant=_q(quant, f"{prefix}.linear_2"))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class CombinedTimestepEmbeddings(nn.Module):
    """`PixArtAlphaCombinedTimestepSizeEmbeddings` without additional conditions."""

    def __init__(self, width: int, quant: Mapping[str, QuantArg] | QuantArg) -> None:
        super().__init__()
        prefix = "adaln_single.emb.timestep_embedder"
        self.timestep_embedder = TimestepEmbedding(width, quant, prefix)

    def forward(self, timestep: Tensor, hidden_dtype: torch.dtype) -> Tensor:
        # Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0): (B,) → (B, 256)
        proj = get_timestep_embedding(
            timestep, TIME_FREQ_DIM, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        return self.timestep_embedder(proj.to(dtype=hidden_dtype))  # (B, width)


class AdaLayerNormSingle(nn.Module):
    """adaLN-single (PixArt-α §2.3): one ``width → 6·width`` modulation for all blocks.

    With an active width ``w`` below the max ``W``, the output rows kept are the six
    segments ``[k·W, k·W + w)`` so that the (B, 6, w) reshape in every block sees the same
    shift/scale/gate slices a standalone model of width ``w`` produces.
    """

    def __init__(self, width: int, quant: Mapping[str, QuantArg] | QuantArg) -> None:
        super().__init__()
        self.width = width
        self.emb = CombinedTimestepEmbeddings(width, quant)
        self.silu = nn.SiLU()
        self.linear = ElasticLinear(
            width, 6 * width, bias=True, quant=_q(quant, "adaln_single.linear")
        )

    def set_active(self, width: int | None) -> None:
        full = width is None or width == self.width
        te = self.emb.timestep_embedder
        configure(te.linear_1, out=width)
        configure(te.linear_2, inp=width, out=width)
        configure(
            self.linear,
            inp=width,
            out=None if full else segments([(width, self.width)] * 6),
        )

    def forward(self, timestep: Tensor, hidden_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        emb = self.emb(timestep, hidden_dtype)  # (B, w)
        return self.linear(self.silu(emb)), emb  # (B, 6w), (B, w)


class CaptionProjection(nn.Module):
    """`PixArtAlphaTextProjection`: linear_1 → GELU(tanh) → linear_2, caption → width."""

    def __init__(
        self, in_features: int, width: int, quant: Mapping[str, QuantArg] | QuantArg
    ) -> None:
        super().__init__()
        self.linear_1 = ElasticLinear(
            in_features, width, quant=_q(quant, "caption_projection.linear_1")
        )
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = ElasticLinear(width, width, quant=_q(quant, "caption_projection.linear_2"))

    def set_active(self, width: int | None) -> None:
        configure(self.linear_1, out=width)
        configure(self.linear_2, inp=width, out=width)

    def forward(self, caption: Tensor) -> Tensor:
        return self.linear_2(self.act_1(self.linear_1(caption)))


class GELUProj(nn.Module):
    """diffusers' `GELU(approximate="tanh")` activation module: proj → tanh-GELU."""

    def __init__(self, width: int, inner: int, quant: QuantArg) -> None:
        super().__init__()
        self.proj = ElasticLinear(width, inner, bias=True, quant=quant)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """diffusers' `FeedForward(activation_fn="gelu-approximate")`: net = [GELU, Dropout, Linear]."""

    def __init__(
        self, width: int, inner: int, quant: Mapping[str, QuantArg] | QuantArg, prefix: str
    ) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [
                GELUProj(width, inner, _q(quant, f"{prefix}.net.0.proj")),
                nn.Dropout(0.0),
                ElasticLinear(inner, width, bias=True, quant=_q(quant, f"{prefix}.net.2")),
            ]
        )

    def set_active(self, width: int | None, inner: int | None) -> None:
        configure(self.net[0].proj, inp=width, out=inner)
        configure(self.net[2], inp=inner, out=width)

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x


class DiTBlock(nn.Module):
    """`BasicTransformerBlock(norm_type="ada_norm_single")` of PixArt-α.

    x ← x + g₁·attn1(LN(x)·(1+s₁)+b₁);  x ← x + attn2(x, ctx);
    x ← x + g₂·ff(LN(x)·(1+s₂)+b₂),
    with (b₁, s₁, g₁, b₂, s₂, g₂) = scale_shift_table + adaLN-single output, each
    (B, 1, w).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        dim_head: int,
        inner: int,
        cross_attention: bool,
        quant: Mapping[str, QuantArg] | QuantArg,
        prefix: str,
    ) -> None:
        super().__init__()

        def aq(name: str) -> dict[str, QuantArg]:
            names = ("to_q", "to_k", "to_v", "to_out.0")
            return {n: _q(quant, f"{prefix}.{name}.{n}") for n in names}

        self.width = width
        self.norm1 = ElasticLayerNorm(width, elementwise_affine=False, eps=NORM_EPS)
        self.attn1 = ElasticAttention(
            width, heads, dim_head, bias=True, out_bias=True, quant=aq("attn1")
        )
        self.norm2 = ElasticLayerNorm(width, elementwise_affine=False, eps=NORM_EPS)
        self.attn2 = (
            # Cross-attention reads the projected caption, which has the model's width.
            ElasticAttention(
                width,
                heads,
                dim_head,
                cross_attention_dim=width,
                bias=True,
                out_bias=True,
                quant=aq("attn2"),
                context_follows_width=True,
            )
            if cross_attention
            else None
        )
        self.ff = FeedForward(width, inner, quant, f"{prefix}.ff")
        self.scale_shift_table = nn.Parameter(torch.randn(6, width) / width**0.5)
        self.active_width: int | None = None

    def set_active(self, width: int | None, heads: int | None, inner: int | None) -> None:
        self.active_width = width
        self.attn1.set_active(width, heads)
        if self.attn2 is not None:
            self.attn2.set_active(width, heads)
        self.ff.set_active(width, inner)

    def reset_active(self) -> None:
        self.active_width = None

    def sliced_state(self) -> dict[str, Tensor]:
        """The (6, w) table of the active width, as a standalone block of width w holds it."""
        w = self.active_width or self.width
        return {"scale_shift_table": self.scale_shift_table[:, :w].detach().clone()}

    def forward(
        self,
        x: Tensor,
        temb: Tensor,
        context: Tensor | None,
        attn_bias: Tensor | None,
        context_bias: Tensor | None,
    ) -> Tensor:
        # x: (B, N, w); temb: (B, 6w); context: (B, M, w)
        b, w = x.shape[0], x.shape[-1]
        table = self.scale_shift_table[:, :w]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            table[None] + temb.reshape(b, 6, -1)
        ).chunk(6, dim=1)
        h = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = gate_msa * self.attn1(h, bias=attn_bias) + x
        if self.attn2 is not None:
            # PixArt applies no norm before cross-attention.
            x = self.attn2(x, context, bias=context_bias) + x
        h = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.ff(h) + x


class _DiTTrunk:
    """Module layout and forward pass shared by the standalone model and the supernet."""

    transformer_blocks: nn.ModuleList
    scale_shift_table: nn.Parameter

    def _build(
        self,
        *,
        sample_size: int,
        patch_size: int,
        in_channels: int,
        out_channels: int,
        width: int,
        heads: list[int],
        dim_head: int,
        ff_inner: list[int],
        cross_attention: bool,
        caption_channels: int | None,
        interpolation_scale: float,
        quant: Mapping[str, QuantArg] | QuantArg,
    ) -> None:
        self.patch_size_ = patch_size
        self.out_channels_ = out_channels
        self.pos_embed = PatchEmbed(
            sample_size,
            patch_size,
            in_channels,
            width,
            interpolation_scale,
            _q(quant, "pos_embed.proj"),
        )
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(width, h, dim_head, f, cross_attention, quant, f"transformer_blocks.{i}")
            for i, (h, f) in enumerate(zip(heads, ff_inner))
        )
        self.norm_out = ElasticLayerNorm(width, elementwise_affine=False, eps=NORM_EPS)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width**0.5)
        self.proj_out = ElasticLinear(
            width, patch_size * patch_size * out_channels, quant=_q(quant, "proj_out")
        )
        self.adaln_single = AdaLayerNormSingle(width, quant)
        self.caption_projection = (
            CaptionProjection(caption_channels, width, quant) if cross_attention else None
        )

    def _depth(self) -> int:
        return len(self.transformer_blocks)

    def _run(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None,
        timestep: Tensor | float | None,
        attention_mask: Tensor | None,
        encoder_attention_mask: Tensor | None,
    ) -> Tensor:
        p, c = self.patch_size_, self.out_channels_
        b = hidden_states.shape[0]
        gh, gw = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
        attn_bias = _bias_from_mask(attention_mask, hidden_states.dtype)
        ctx_bias = _bias_from_mask(encoder_attention_mask, hidden_states.dtype)

        x = self.pos_embed(hidden_states)  # (B, N, w)
        w = x.shape[-1]
        t = as_timesteps(timestep, b, x.device)
        temb, emb_t = self.adaln_single(t, x.dtype)  # (B, 6w), (B, w)

        context = None
        if self.caption_projection is not None:
            if encoder_hidden_states is None:
                raise ValueError(
                    "this model cross-attends to a context: pass encoder_hidden_states of "
                    "shape (batch, context_len, caption_channels)"
                )
            context = self.caption_projection(encoder_hidden_states).view(b, -1, w)  # (B, M, w)

        for block in self.transformer_blocks[: self._depth()]:
            x = block(x, temb, context, attn_bias, ctx_bias)

        table = self.scale_shift_table[:, :w]
        return _final_layer(x, emb_t, self.norm_out, table, self.proj_out, gh, gw, p, c)


def _final_layer(
    x: Tensor,
    emb_t: Tensor,
    norm_out: nn.Module,
    table: Tensor,
    proj_out: nn.Module,
    gh: int,
    gw: int,
    p: int,
    c: int,
) -> Tensor:
    """PixArt's final layer: modulated LayerNorm → proj_out → unpatchify.

    x (B, N, w), emb_t (B, w), table (2, w) → (B, C, gh·p, gw·p).
    """
    shift, scale = (table[None] + emb_t[:, None]).chunk(2, dim=1)
    x = norm_out(x) * (1 + scale) + shift
    x = proj_out(x)  # (B, N, p·p·C)
    # unpatchify: (B, gh, gw, p, p, C) → (B, C, gh·p, gw·p)
    x = x.reshape(-1, gh, gw, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(-1, c, gh * p, gw * p)


# ---------------------------------------------------------------------------------------
# The standalone (exported) model
# ---------------------------------------------------------------------------------------
class MobileDiT(_DiTTrunk, ModelMixin, ConfigMixin):
    """A concrete mobile DiT: PixArt-α layout with per-block heads and feed-forward widths.

    `quant_plan` (module path → scheme string) gives each layer its quant scheme at
    construction, so learned quantizer parameters exist before `from_pretrained` loads them;
    layers absent from it run float.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        width: int = 128,
        num_attention_heads: list[int] | None = None,
        attention_head_dim: int = 32,
        ff_inner_dims: list[int] | None = None,
        cross_attention: bool = True,
        caption_channels: int | None = 64,
        interpolation_scale: float | None = None,
        quant_plan: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        heads = list(num_attention_heads) if num_attention_heads is not None else [4] * 8
        inner = list(ff_inner_dims) if ff_inner_dims is not None else [4 * width] * len(heads)
        if len(heads) != len(inner):
            raise ConfigError(
                f"num_attention_heads has {len(heads)} entries and ff_inner_dims {len(inner)}; "
                "give one per transformer block"
            )
        if cross_attention and not caption_channels:
            raise ConfigError(
                "cross_attention=True needs caption_channels (the context's channel count)"
            )
        self._build(
            sample_size=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            out_channels=in_channels if out_channels is None else out_channels,
            width=width,
            heads=heads,
            dim_head=attention_head_dim,
            ff_inner=inner,
            cross_attention=cross_attention,
            caption_channels=caption_channels,
            interpolation_scale=(
                max(sample_size // 64, 1) if interpolation_scale is None else interpolation_scale
            ),
            quant=dict(quant_plan or {}),
        )

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        timestep: Tensor | float | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        attention_mask: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[Tensor]:
        """As `PixArtTransformer2DModel.forward` (no additional conditions).

        hidden_states (B, C, H, W); encoder_hidden_states (B, M, caption_channels);
        timestep scalar or (B,); masks (B, N) / (B, M) keep=1 or additive biases (B, 1, ·).
        """
        out = self._run(
            hidden_states, encoder_hidden_states, timestep, attention_mask, encoder_attention_mask
        )
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


def standalone_config(cfg: MobileDiTConfig, space: SearchSpace, sample: Sample) -> dict[str, Any]:
    """Constructor arguments of the `MobileDiT` of `sample`."""
    s = space.canonical(sample)
    a = _resolve(cfg, s)
    return {
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "width": a.width,
        "num_attention_heads": list(a.heads),
        "attention_head_dim": cfg.dim_head,
        "ff_inner_dims": list(a.inner),
        "cross_attention": cfg.cross_attention,
        "caption_channels": cfg.caption_channels if cfg.cross_attention else None,
        "interpolation_scale": cfg.interpolation_scale,
        "quant_plan": {layer.path: str(layer.quant) for layer in space.freeze(s).layers},
    }


def example_inputs(cfg: MobileDiTConfig, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """Noisy latents, timesteps in [0, 1000) and (with cross-attention) a context."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "hidden_states": torch.randn(
            batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g
        ),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
    }
    if cfg.cross_attention:
        out["encoder_hidden_states"] = torch.randn(
            batch, cfg.context_len, cfg.caption_channels, generator=g
        )
    return out


# ---------------------------------------------------------------------------------------
# The supernet
# ---------------------------------------------------------------------------------------
class MobileDiTSupernet(_DiTTrunk, Supernet):
    """Weight-sharing supernet of a `MobileDiTConfig` at its max architecture."""

    standalone_cls = MobileDiT

    def __init__(self, cfg: MobileDiTConfig, space: SearchSpace) -> None:
        quant_paths = {p + QUANT_SUFFIX: p for p in _all_layer_paths(cfg)}
        super().__init__(space, quant_paths)
        self.cfg = cfg
        self._build(
            sample_size=cfg.sample_size,
            patch_size=cfg.patch_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.out_ch,
            width=cfg.max_width,
            heads=[cfg.max_heads] * cfg.max_depth,
            dim_head=cfg.dim_head,
            ff_inner=[ff_inner(cfg.mlp_ratios[-1], cfg.max_width)] * cfg.max_depth,
            cross_attention=cfg.cross_attention,
            caption_channels=cfg.caption_channels if cfg.cross_attention else None,
            interpolation_scale=cfg.interpolation_scale,
            quant=tuple(cfg.quant),
        )
        self.active_depth: int | None = None

    # -- activation ---------------------------------------------------------------------
    def _depth(self) -> int:
        return self.active_depth or len(self.transformer_blocks)

    def _configure(self, sample: Sample) -> None:
        a = _resolve(self.cfg, sample)
        w = a.width
        self.active_depth = a.depth
        self.pos_embed.set_active(w)
        self.adaln_single.set_active(w)
        if self.caption_projection is not None:
            self.caption_projection.set_active(w)
        for i, block in enumerate(self.transformer_blocks):
            h_lab, r_lab = _block_labels(i)
            block.set_active(w, int(sample[h_lab]), ff_inner(sample[r_lab], w))
        configure(self.proj_out, inp=w)

    def _reset_depth(self) -> None:
        self.active_depth = None

    def depth_units(self) -> list[tuple[str, str, int]]:
        """(module path, depth label, v): block i runs only when ``sample["depth"] >= i + 1``.

        The hook of differentiable depth (`nas.policies.depth`), which gates these blocks'
        residual contributions.
        """
        lo = self.cfg.depths[0]
        return [(f"transformer_blocks.{i}", "depth", i + 1) for i in range(lo, self.cfg.max_depth)]

    def sliced_state(self) -> dict[str, Tensor]:
        """The final (2, w) scale-shift table of the active width."""
        w = self._active["width"] if self._active else self.cfg.max_width
        return {"scale_shift_table": self.scale_shift_table[:, :w].detach().clone()}

    def standalone_config(self, sample: Sample) -> dict[str, Any]:
        return standalone_config(self.cfg, self.space, sample)

    def example_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
        device = next(self.parameters()).device
        return {k: v.to(device) for k, v in example_inputs(self.cfg, batch, seed).items()}

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        timestep: Tensor | float | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        attention_mask: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[Tensor]:
        """The active sub-network (the max one when none is active); see `MobileDiT.forward`."""
        out = self._run(
            hidden_states, encoder_hidden_states, timestep, attention_mask, encoder_attention_mask
        )
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    # -- teacher ------------------------------------------------------------------------
    def expected_teacher_config(self) -> dict[str, Any]:
        """The `PixArtTransformer2DModel` config whose weights this supernet can take."""
        cfg = self.cfg
        return {
            "num_attention_heads": cfg.max_heads,
            "attention_head_dim": cfg.dim_head,
            "in_channels": cfg.in_channels,
            "out_channels": cfg.out_ch,
            "num_layers": cfg.max_depth,
            "cross_attention_dim": cfg.max_width if cfg.cross_attention else None,
            "attention_bias": True,
            "sample_size": cfg.sample_size,
            "patch_size": cfg.patch_size,
            "activation_fn": "gelu-approximate",
            "norm_type": "ada_norm_single",
            "norm_elementwise_affine": False,
            "norm_eps": NORM_EPS,
            "interpolation_scale": cfg.interpolation_scale,
            "use_additional_conditions": False,
            "caption_channels": cfg.caption_channels if cfg.cross_attention else None,
            "attention_type": "default",
        }

    def check_teacher_config(self, config: Mapping[str, Any]) -> None:
        """Raise `ConfigError` naming the first key where a PixArt config differs from ours."""
        from diffusers import PixArtTransformer2DModel

        defaults = {
            k: p.default
            for k, p in inspect.signature(PixArtTransformer2DModel.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        got = {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}
        # Effective values of PixArt's None defaults (see its __init__).
        if got.get("out_channels") is None:
            got["out_channels"] = got["in_channels"]
        if got.get("use_additional_conditions") is None:
            got["use_additional_conditions"] = got["sample_size"] == 128
        if got.get("interpolation_scale") is None:
            got["interpolation_scale"] = max(got["sample_size"] // 64, 1)
        for key, want in self.expected_teacher_config().items():
            have = got.get(key)
            same = (
                math.isclose(float(have), float(want))
                if isinstance(want, float) and isinstance(have, (int, float))
                else have == want
            )
            if not same:
                hint = (
                    "this family supports use_additional_conditions=False only"
                    if key == "use_additional_conditions"
                    else "build the space with a MobileDiTConfig whose max architecture matches "
                    "the teacher, or pick a matching teacher"
                )
                raise ConfigError(
                    f"teacher config {key}={have!r} does not match the supernet's max "
                    f"architecture ({key}={want!r}); {hint}"
                )
        extra = sorted(set(got) - set(defaults) - {"_class_name", "_diffusers_version"})
        if extra:
            log.warning("teacher config has keys unknown to PixArtTransformer2DModel: %s", extra)

    def load_teacher(self, path: str | Path) -> None:
        """Initialise all shared weights from a `PixArtTransformer2DModel.save_pretrained` dir.

        The config is checked first (`check_teacher_config`); weights are read from
        safetensors only. Learned quantizer parameters keep their initial values.
        """
        from diffusers import PixArtTransformer2DModel

        p, config = read_teacher_config(path, "PixArtTransformer2DModel", "transformer")
        self.check_teacher_config(config)
        teacher = PixArtTransformer2DModel.from_pretrained(
            p, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
        )
        copy_teacher_state(self, teacher.state_dict())
        log.info("initialised %s from teacher %s", self.space.name, p)


# ---------------------------------------------------------------------------------------
# Block models: one float micro-model per spec block (what a latency backend times)
# ---------------------------------------------------------------------------------------
class AdaLNSingleBlock(nn.Module):
    """adaLN-single on timesteps (B,) → (modulation (B, 6w), embedding (B, w))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.adaln_single = AdaLayerNormSingle(width, None)

    def forward(self, timestep: Tensor) -> tuple[Tensor, Tensor]:
        return self.adaln_single(timestep, self.adaln_single.linear.weight.dtype)


class DiTBlockModel(nn.Module):
    """A `DiTBlock` without masks: (x (B, N, w), temb (B, 6w)[, context (B, M, w)])."""

    def __init__(self, block: DiTBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, temb: Tensor, context: Tensor | None = None) -> Tensor:
        return self.block(x, temb, context, None, None)


class DiTFinalBlock(nn.Module):
    """norm_out + scale_shift_table + proj_out + unpatchify: (x (B, N, w), emb (B, w))."""

    def __init__(self, width: int, grid: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.grid, self.p, self.c = grid, patch_size, out_channels
        self.norm_out = ElasticLayerNorm(width, elementwise_affine=False, eps=NORM_EPS)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width**0.5)
        self.proj_out = ElasticLinear(width, patch_size * patch_size * out_channels)

    def forward(self, x: Tensor, emb_t: Tensor) -> Tensor:
        g = self.grid
        table = self.scale_shift_table
        return _final_layer(x, emb_t, self.norm_out, table, self.proj_out, g, g, self.p, self.c)


def _bm_patch_embed(d: dict[str, Any], x: BlockInputs) -> Built:
    p, h, w = d["patch_size"], d["H"], d["W"]
    m = PatchEmbed(h, p, d["in_channels"], d["width"], max(h // 64, 1))
    m.pos(d["width"], h // p, w // p, torch.device("cpu"))  # cache: a constant when traced
    return m, (x.randn(d["in_channels"], h, w),)


def _bm_adaln_single(d: dict[str, Any], x: BlockInputs) -> Built:
    if d["freq_dim"] != TIME_FREQ_DIM or d["out"] != 6 * d["width"]:
        raise ConfigError(f"adaln_single dims {d}: need freq_dim {TIME_FREQ_DIM}, out 6×width")
    return AdaLNSingleBlock(d["width"]), (x.steps(),)


def _bm_caption_projection(d: dict[str, Any], x: BlockInputs) -> Built:
    m = CaptionProjection(d["caption_channels"], d["width"], None)
    return m, (x.randn(d["context_len"], d["caption_channels"]),)


def _bm_dit_block(d: dict[str, Any], x: BlockInputs) -> Built:
    w, cross = d["width"], bool(d["cross_attention"])
    blk = DiTBlock(w, d["heads"], d["dim_head"], d["ff_inner"], cross, None, "block")
    inputs = (x.randn(d["tokens"], w), x.randn(6 * w))
    if cross:
        if d["context_dim"] != w:
            raise ConfigError(f"dit_block dims {d}: the projected context has the model width")
        inputs += (x.randn(d["context_len"], w),)
    return DiTBlockModel(blk), inputs


def _bm_dit_final(d: dict[str, Any], x: BlockInputs) -> Built:
    g, w = d["grid"], d["width"]
    if g * g != d["tokens"]:
        raise ConfigError(f"dit_final dims {d}: tokens must be grid²")
    m = DiTFinalBlock(w, g, d["patch_size"], d["out_channels"])
    return m, (x.randn(d["tokens"], w), x.randn(w))


_BLOCK_MODELS: dict[str, Builder] = {
    "patch_embed": _bm_patch_embed,
    "adaln_single": _bm_adaln_single,
    "caption_projection": _bm_caption_projection,
    "dit_block": _bm_dit_block,
    "dit_final": _bm_dit_final,
}


# The float micro-model of one spec block and its example inputs (batch `batch`).
#
# Built of the classes the standalone model uses, at exactly `dims` (a `BlockSpec.d`),
# unconfigured (no quant schemes), in eval mode; weights and inputs are seeded 0.
# ``module(*inputs)`` runs what the standalone model runs for that block — patch_embed:
# x (B, C, H, W) → tokens; adaln_single: timesteps (B,) → ((B, 6w), (B, w));
# caption_projection: caption (B, M, caption_channels); dit_block: (x (B, N, w),
# temb (B, 6w)[, context (B, M, w)]); dit_final: (x (B, N, w), emb (B, w)) → image.
block_model = block_model_hook(FAMILY_NAME, _BLOCK_MODELS)


def make_supernet(cfg: MobileDiTConfig, space: SearchSpace) -> MobileDiTSupernet:
    return MobileDiTSupernet(cfg, space)


FAMILY = Family(
    FAMILY_NAME,
    make_space,
    make_supernet,
    MobileDiT,
    block_model,
    standalone_hook(MobileDiT, standalone_config, example_inputs),
)

# Digits (1 channel, 16×16, 10 classes embedded as a 4-token context): 64 tokens of
# width ≤ 128, ≤ 8 blocks — a max forward on batch 8 runs in milliseconds on a CPU.
MOBILE_DIT = MobileDiTConfig()
# Tiny variant for tests: 8×8 input, 16 tokens, widths 16/32, 1–2 blocks.
TEST_MOBILE_DIT = MobileDiTConfig(
    sample_size=8,
    patch_size=2,
    in_channels=1,
    caption_channels=16,
    context_len=2,
    widths=(16, 32),
    depths=(1, 2),
    heads=(1, 2),
    mlp_ratios=(2, 4),
)

register_space("mobile_dit", FAMILY, MOBILE_DIT)
register_space("test_mobile_dit", FAMILY, TEST_MOBILE_DIT)

__all__ = [
    "FAMILY",
    "MobileDiT",
    "MobileDiTConfig",
    "MobileDiTSupernet",
    "block_model",
    "ff_inner",
    "make_space",
    "make_supernet",
]
