"""`mobile_unet` configuration: `MobileUNetConfig`, its max-architecture layout and the
concrete sizes of a sample (pure: no torch).

Per-stage fields hold one tuple of options per stage (smallest first); the largest
options together are the max (teacher-compatible) architecture. `_layout` derives
the max architecture's facts once per config; `_resolve` turns a canonical sample
into the widths / depths / heads / ResNet inner widths the supernet activates and
the standalone model is built with (the labels: `search_spaces.mobile_unet.space`).
The named configs at the end are those of the registered spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from nas.errors import ConfigError
from nas.quant.scheme import QuantScheme

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
