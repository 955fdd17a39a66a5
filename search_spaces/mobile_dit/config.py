"""`mobile_dit` configuration: `MobileDiTConfig` and the registered configs (pure).

Fixed sizes (sample, patch, channels, caption, context length) and the options of
every label, validated on construction (`ConfigError` names the field); the largest
options are the max architecture, diffusers' ``PixArtTransformer2DModel`` (PixArt-α,
Chen et al., ICLR 2024) with ``FeedForward(mult=4)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.errors import ConfigError
from nas.quant.scheme import QuantScheme

FAMILY_NAME = "mobile_dit"
# PixArt's fixed sizes: sinusoidal timestep features (Timesteps(256)), LayerNorm eps.
TIME_FREQ_DIM = 256
NORM_EPS = 1e-6
# Cheapest first: `space.min()` is the most compressed, `space.max()` full precision.
DEFAULT_QUANT = ("w4a8:lsq", "w4a16:minmax", "w8a8:minmax", "w8a8:lsq", "fp16", "fp32")


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
