"""`mobile_dit` standalone model: `MobileDiT`, what `extract` and export produce.

`_DiTTrunk` is the module layout and forward pass the standalone model and the
supernet share (PixArt-α's ``PixArtTransformer2DModel`` without additional
conditions; its forward takes that class's arguments, so `MobileDiT` is a drop-in
``transformer`` of `PixArtAlphaPipeline`); `standalone_config` gives a sample's
constructor arguments, `example_inputs` the keyword inputs of one forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from nas.diffusers_compat import as_timesteps
from nas.elastic import ElasticLayerNorm, ElasticLinear
from nas.errors import ConfigError
from nas.space import SearchSpace
from nas.spec import Sample
from search_spaces.common.contract import refuse
from search_spaces.common.family import denoiser_inputs
from search_spaces.common.layers import QuantSource, quant_for
from search_spaces.mobile_dit.blocks import (
    AdaLayerNormSingle,
    CaptionProjection,
    DiTBlock,
    PatchEmbed,
    _bias_from_mask,
    _final_layer,
)
from search_spaces.mobile_dit.config import NORM_EPS, MobileDiTConfig
from search_spaces.mobile_dit.space import _resolve

#: PixArt's resolution / aspect-ratio micro-conditions, which this model does not embed.
MICRO_CONDITIONS = ("resolution", "aspect_ratio")


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
        quant: QuantSource,
    ) -> None:
        self.patch_size_ = patch_size
        self.out_channels_ = out_channels
        self.pos_embed = PatchEmbed(
            sample_size,
            patch_size,
            in_channels,
            width,
            interpolation_scale,
            quant_for(quant, "pos_embed.proj"),
        )
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(width, h, dim_head, f, cross_attention, quant, f"transformer_blocks.{i}")
            for i, (h, f) in enumerate(zip(heads, ff_inner))
        )
        self.norm_out = ElasticLayerNorm(width, elementwise_affine=False, eps=NORM_EPS)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width**0.5)
        self.proj_out = ElasticLinear(
            width, patch_size * patch_size * out_channels, quant=quant_for(quant, "proj_out")
        )
        self.adaln_single = AdaLayerNormSingle(width, quant)
        self.caption_projection = (
            CaptionProjection(caption_channels, width, quant) if cross_attention else None
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
        timestep an int, a float, a 0-d or a (B,) tensor (broadcast to the batch); masks
        (B, N) / (B, M) keep=1 or additive biases (B, 1, ·). ``added_cond_kwargs``:
        ``resolution`` / ``aspect_ratio`` are ignored, as by a PixArtTransformer2DModel
        with ``use_additional_conditions=False`` (PixArtAlphaPipeline sends them to every
        model of sample_size 128; this one has no embedders for them); any other
        non-None entry is refused, as is a non-empty ``cross_attention_kwargs``.
        The supernet runs its active sub-network (the max one when none is active).
        """
        name = type(self).__name__
        extra = {
            k: v
            for k, v in (added_cond_kwargs or {}).items()
            if k not in MICRO_CONDITIONS and v is not None
        }
        refuse(
            name,
            f"added_cond_kwargs {sorted(extra)}",
            extra,
            "it embeds only the timestep (and the caption through encoder_hidden_states)",
        )
        refuse(
            name,
            "cross_attention_kwargs",
            cross_attention_kwargs,
            "it has no attention processors or LoRA adapters to pass them to",
        )
        out = self._run(
            hidden_states, encoder_hidden_states, timestep, attention_mask, encoder_attention_mask
        )
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

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


class MobileDiT(_DiTTrunk, ModelMixin, ConfigMixin):
    """A concrete mobile DiT: PixArt-α layout with per-block heads and feed-forward widths.

    `quant_plan` (module path → scheme string) gives each layer its quant scheme at
    construction, so learned quantizer parameters exist before `from_pretrained` loads them;
    layers absent from it run float.

    diffusers contract: a drop-in ``transformer`` of `PixArtAlphaPipeline`. `forward`
    takes `PixArtTransformer2DModel.forward`'s arguments (see `_DiTTrunk.forward` for what
    it ignores and refuses) and the config carries what the pipeline reads:
    ``sample_size``, ``in_channels`` and ``out_channels`` (recorded resolved, never None:
    the pipeline computes ``out_channels // 2`` to detect a learned-σ head), and
    ``use_additional_conditions``, which can only be False. The pipeline's default
    ``use_resolution_binning=True`` only knows PixArt's sample sizes 32 / 64 / 128; call it
    with ``use_resolution_binning=False`` for other sizes. A cross-attention model refuses
    a missing ``encoder_hidden_states`` (there is no null caption).
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
        use_additional_conditions: bool = False,
    ) -> None:
        super().__init__()
        if use_additional_conditions:
            raise ConfigError(
                "MobileDiT config use_additional_conditions=True is not supported (PixArt's "
                "resolution / aspect-ratio embedders); set it to False"
            )
        if out_channels is None:
            # Pipelines read the config, not the module: record the value the model has.
            out_channels = in_channels
            self.register_to_config(out_channels=out_channels)
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
            out_channels=out_channels,
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
    image = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    context = (cfg.context_len, cfg.caption_channels) if cfg.cross_attention else None
    return denoiser_inputs(batch, seed, "hidden_states", image, context)
