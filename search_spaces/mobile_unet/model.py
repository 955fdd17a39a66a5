"""`mobile_unet` standalone model: `MobileUNet`, what `extract` and export produce.

`_build` creates the diffusers-named modules of one architecture (`_Arch`) and
`_run` is `UNet2DConditionModel.forward`'s data flow; both serve the standalone model
and the supernet (built at the max architecture: `model_kwargs` of `_max_active`).
`standalone_config` gives a sample's constructor arguments, `example_inputs` the
keyword inputs of one forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from nas.diffusers_compat import as_timesteps
from nas.elastic import ElasticConv2d, ElasticGroupNorm
from nas.errors import ConfigError
from nas.quant.layers import QuantMixin
from nas.quant.scheme import QuantScheme
from nas.space import SearchSpace
from nas.spec import Sample
from search_spaces.common.family import denoiser_inputs
from search_spaces.common.layers import TimestepEmbedding
from search_spaces.mobile_unet.blocks import DownBlock, MidBlock, UpBlock
from search_spaces.mobile_unet.config import (
    RESNET_EPS,
    MobileUNetConfig,
    _Active,
    _layout,
    _resolve,
)


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


def _arch_of(c: Mapping[str, Any]) -> _Arch:
    """The `_Arch` of `MobileUNet` constructor arguments `c`, checked (`ConfigError`)."""
    w = tuple(int(x) for x in c["block_out_channels"])
    n, groups = len(w), c["norm_num_groups"]
    per_stage = (
        "layers_per_block",
        "transformer_layers_per_block",
        "attention_heads",
        "attention_head_dims",
    )
    for key in per_stage:
        if len(c[key]) != n:
            raise ConfigError(
                f"MobileUNet config {key} has {len(c[key])} entries; block_out_channels has {n}"
            )
    depths = tuple(int(x) for x in c["layers_per_block"])
    if any(ch % groups for ch in w):
        raise ConfigError(
            f"MobileUNet config block_out_channels={list(w)}: each must be a multiple of "
            f"norm_num_groups={groups}"
        )
    down = (
        tuple(tuple(x) for x in c["down_inner"])
        if c["down_inner"] is not None
        else tuple((w[s],) * depths[s] for s in range(n))
    )
    up = (
        tuple(tuple(x) for x in c["up_inner"])
        if c["up_inner"] is not None
        else tuple((w[n - 1 - u],) * (depths[n - 1 - u] + 1) for u in range(n))
    )
    mid = tuple(c["mid_inner"]) if c["mid_inner"] is not None else (w[-1], w[-1])
    if [len(x) for x in down] != list(depths):
        raise ConfigError(
            f"MobileUNet config down_inner needs layers_per_block[s] widths per stage, got {down}"
        )
    if [len(x) for x in up] != [depths[n - 1 - u] + 1 for u in range(n)]:
        raise ConfigError(
            f"MobileUNet config up_inner needs layers_per_block[n-1-u]+1 widths per up "
            f"block u, got {up}"
        )
    if len(mid) != 2:
        raise ConfigError(f"MobileUNet config mid_inner needs 2 widths, got {mid}")
    shortcut = (
        tuple(bool(x) for x in c["down_shortcut"])
        if c["down_shortcut"] is not None
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
    tp = int(c["time_proj_dim"] or w[0])
    return _Arch(
        in_channels=c["in_channels"],
        out_channels=c["out_channels"],
        widths=w,
        depths=depths,
        attn=tuple(int(x) for x in c["transformer_layers_per_block"]),
        heads=tuple(int(x) for x in c["attention_heads"]),
        dim_heads=tuple(int(x) for x in c["attention_head_dims"]),
        mid_heads=int(c["mid_attention_heads"]),
        mid_depth=int(c["mid_transformer_layers"]),
        down_inner=down,
        up_inner=up,
        mid_inner=mid,
        down_shortcut=shortcut,
        time_proj_dim=tp,
        time_embed_dim=int(c["time_embed_dim"] or 4 * tp),
        cross_attention_dim=c["cross_attention_dim"],
        groups=groups,
    )


class _UNetForward:
    """The forward pass of `MobileUNet` and of the supernet (`UNet2DConditionModel`'s)."""

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[Tensor]:
        """sample (B, C, H, W), timestep (int, float, () or (B,)), context (B, L, ctx dim).

        The supernet runs its active sub-network (the max one when none is active).
        """
        # diffusers' own output class, imported here: its module loads every diffusers U-Net
        # block (~1.5 s), which every `nas` command would otherwise pay on start-up
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        out = _run(self, sample, timestep, encoder_hidden_states)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


# =========================================================================== standalone model
class MobileUNet(_UNetForward, ModelMixin, ConfigMixin):
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
        # register_to_config has recorded every argument (defaults filled in) before this
        # body runs: the model is built from exactly the config save_pretrained writes.
        _build(self, _arch_of(self.config))
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


def model_kwargs(cfg: MobileUNetConfig, act: _Active) -> dict[str, Any]:
    """`MobileUNet` constructor arguments of the sizes `act`, without a quant plan."""
    lay = _layout(cfg)
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
    }


def standalone_config(cfg: MobileUNetConfig, space: SearchSpace, sample: Sample) -> dict[str, Any]:
    """Constructor arguments of the `MobileUNet` of `sample`."""
    s = space.canonical(sample)
    return {
        **model_kwargs(cfg, _resolve(cfg, s)),
        "quant_plan": {layer.path: str(layer.quant) for layer in space.freeze(s).layers},
    }


def example_inputs(cfg: MobileUNetConfig, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """Noisy samples, integer timesteps in [0, 1000) and a context of `context_len` tokens."""
    image = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    return denoiser_inputs(batch, seed, "sample", image, (cfg.context_len, cfg.cross_attention_dim))
