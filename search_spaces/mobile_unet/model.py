"""`mobile_unet` standalone model: `MobileUNet`, what `extract` and export produce.

`_build` creates the diffusers-named modules of one architecture (`_Arch`) and
`_run` is `UNet2DConditionModel.forward`'s data flow; both serve the standalone model
and the supernet (built at the max architecture: `model_kwargs` of `_max_active`).
`_UNetForward.forward` takes `UNet2DConditionModel.forward`'s arguments and refuses
those it cannot honour, so `MobileUNet` is a drop-in diffusers ``unet`` (see its
docstring). `standalone_config` gives a sample's constructor arguments,
`example_inputs` the keyword inputs of one forward pass.
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
from search_spaces.common.contract import check_fixed_config, refuse, refuse_masking
from search_spaces.common.family import denoiser_inputs
from search_spaces.common.layers import TimestepEmbedding
from search_spaces.mobile_unet.blocks import DownBlock, MidBlock, StageDims, UpBlock
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
    dims = [
        StageDims(
            w[s], a.attn[s], a.heads[s], a.dim_heads[s], a.cross_attention_dim, temb, a.groups
        )
        for s in range(n)
    ]
    m.down_blocks = nn.ModuleList(
        [
            DownBlock(
                w[0] if s == 0 else w[s - 1],
                a.down_inner[s],
                dims[s],
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
        prev = w[s + 1] if s < n - 1 else w[-1]
        ups.append(UpBlock(prev, w[s - 1] if s > 0 else w[0], a.up_inner[u], dims[s], s > 0))
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

    # MobileUNet: its diffusers config; the supernet: its MobileUNetConfig. Both hold
    # cross_attention_dim, the context width `forward` checks.
    config: Any

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor | None = None,
        class_labels: Tensor | None = None,
        timestep_cond: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        down_block_additional_residuals: tuple[Tensor, ...] | None = None,
        mid_block_additional_residual: Tensor | None = None,
        down_intrablock_additional_residuals: tuple[Tensor, ...] | None = None,
        encoder_attention_mask: Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[Tensor]:
        """`UNet2DConditionModel.forward`'s signature and output.

        sample (B, C, H, W); timestep an int, a float, a 0-d or a (B,) tensor (broadcast
        to the batch); encoder_hidden_states (B, L, cross_attention_dim), required.
        The other keywords are accepted when None / empty (what pipelines pass for
        features they do not use) and refused with the reason otherwise: see
        `_refuse_unsupported`. The supernet runs its active sub-network (the max one
        when none is active).
        """
        # diffusers' own output class, imported here: its module loads every diffusers U-Net
        # block (~1.5 s), which every `nas` command would otherwise pay on start-up
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        _refuse_unsupported(
            type(self).__name__,
            class_labels=class_labels,
            timestep_cond=timestep_cond,
            attention_mask=attention_mask,
            cross_attention_kwargs=cross_attention_kwargs,
            added_cond_kwargs=added_cond_kwargs,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
            down_intrablock_additional_residuals=down_intrablock_additional_residuals,
            encoder_attention_mask=encoder_attention_mask,
        )
        _check_context(
            type(self).__name__, sample, encoder_hidden_states, self.config.cross_attention_dim
        )
        out = _run(self, sample, timestep, encoder_hidden_states)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


def _refuse_unsupported(
    name: str,
    *,
    class_labels: Tensor | None,
    timestep_cond: Tensor | None,
    attention_mask: Tensor | None,
    cross_attention_kwargs: dict[str, Any] | None,
    added_cond_kwargs: dict[str, Tensor] | None,
    down_block_additional_residuals: tuple[Tensor, ...] | None,
    mid_block_additional_residual: Tensor | None,
    down_intrablock_additional_residuals: tuple[Tensor, ...] | None,
    encoder_attention_mask: Tensor | None,
) -> None:
    """Refuse the `UNet2DConditionModel.forward` inputs this U-Net has no module for."""
    refuse(
        name,
        "class_labels",
        class_labels,
        "it has no class embedding (num_class_embeds=None); a class conditions it through "
        "encoder_hidden_states (e.g. that class's row of the training task's context table)",
    )
    refuse(
        name,
        "timestep_cond",
        timestep_cond,
        "it has no guidance-scale embedding (time_cond_proj_dim=None, unlike LCM-distilled U-Nets)",
    )
    refuse(
        name,
        "cross_attention_kwargs",
        cross_attention_kwargs,
        "it has no attention processors or LoRA adapters to pass them to",
    )
    refuse(
        name,
        "added_cond_kwargs",
        added_cond_kwargs,
        "it has no added embeddings (addition_embed_type=None): SDXL's text_embeds / "
        "time_ids and IP-Adapter image_embeds need a U-Net built with them",
    )
    residuals = (
        "its skip connections have this architecture's searched widths and counts, so "
        "ControlNet / T2I-Adapter residuals made for another U-Net do not fit them"
    )
    refuse(name, "down_block_additional_residuals", down_block_additional_residuals, residuals)
    refuse(name, "mid_block_additional_residual", mid_block_additional_residual, residuals)
    refuse(
        name,
        "down_intrablock_additional_residuals",
        down_intrablock_additional_residuals,
        residuals,
    )
    refuse_masking(name, "attention_mask", attention_mask)
    refuse_masking(name, "encoder_attention_mask", encoder_attention_mask)


def _check_context(name: str, sample: Tensor, context: Tensor | None, dim: int) -> None:
    """Refuse a missing or misshapen context, saying what to pass.

    There is deliberately no null context: every MobileUNet cross-attends (its mid block
    always has a transformer) and was trained with a context in every batch (text
    embeddings, or a fixed seeded table of class contexts), so a made-up one such as zeros
    would give plausible-looking but meaningless samples. diffusers' own
    `UNet2DConditionModel` requires it too.
    """
    if context is None:
        raise ValueError(
            f"{name} cross-attends to a context: pass encoder_hidden_states of shape (batch, "
            f"tokens, {dim}). Unconditional pipelines (DDPMPipeline, DDIMPipeline) call "
            "unet(sample, t) without one: wrap the model so that it passes the context it "
            "was trained with (for a class-conditional model, that class's context)"
        )
    if context.dim() != 3 or context.shape[0] != sample.shape[0] or context.shape[-1] != dim:
        raise ValueError(
            f"{name}: encoder_hidden_states has shape {tuple(context.shape)}; pass "
            f"(batch, tokens, cross_attention_dim) = ({sample.shape[0]}, tokens, {dim})"
        )


# =========================================================================== standalone model
#: `UNet2DConditionModel` config keys that diffusers pipelines read (e.g.
#: StableDiffusionPipeline reads time_cond_proj_dim to decide on classifier-free guidance),
#: with the only values a MobileUNet has: none of these embeddings exists in it.
DIFFUSERS_FIXED_CONFIG: dict[str, Any] = {
    "time_cond_proj_dim": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "class_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim_type": None,
    "time_embedding_type": "positional",
}


class MobileUNet(_UNetForward, ModelMixin, ConfigMixin):
    """A concrete mobile U-Net (what `extract` and export produce), loadable with `from_pretrained`.

    Same module paths and numerics as `UNet2DConditionModel` with the settings
    in the module docstring; per-block sizes come from the config. Up-block
    ResNets always have a 1×1 shortcut; a down stage's first ResNet has one when
    `down_shortcut[s]` (None: when its in ≠ out). `quant_plan` (module path →
    scheme string) gives layers their fake-quant scheme; absent layers run float.

    diffusers contract: a drop-in ``unet`` of text-to-image pipelines such as
    `StableDiffusionPipeline` (with classifier-free guidance). `forward` takes
    `UNet2DConditionModel.forward`'s arguments; the config carries the keys those
    pipelines read (``sample_size``, ``in_channels`` and `DIFFUSERS_FIXED_CONFIG`).
    Refused with a ValueError that says why: a missing ``encoder_hidden_states``
    (there is no null context, see `_check_context`; unconditional pipelines such as
    `DDIMPipeline` need the model wrapped to pass one), ``class_labels``,
    ``timestep_cond``, non-empty ``cross_attention_kwargs`` / ``added_cond_kwargs``,
    ControlNet / T2I-Adapter residuals and attention masks that mask a position.
    Setting a `DIFFUSERS_FIXED_CONFIG` key to another value is a `ConfigError`. Exports
    whose config.json predates these keys load with their defaults.
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
        time_cond_proj_dim: int | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        encoder_hid_dim_type: str | None = None,
        time_embedding_type: str = "positional",
    ) -> None:
        super().__init__()
        check_fixed_config(type(self).__name__, self.config, DIFFUSERS_FIXED_CONFIG)
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
