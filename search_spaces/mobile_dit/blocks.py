"""`mobile_dit` building blocks: PixArt-α's modules over `nas.elastic` layers.

- DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023): patchify
  with a fixed 2-D sin-cos positional embedding (`PatchEmbed`), transformer blocks, a
  modulated final layer and unpatchify (`_final_layer`).
- PixArt-α (Chen et al., "PixArt-α: Fast Training of Diffusion Transformer", ICLR 2024,
  §2.3): *adaLN-single* — one timestep MLP and one ``dim → 6·dim`` linear shared by all
  blocks (`AdaLayerNormSingle`), plus a learned per-block ``scale_shift_table`` (6, dim)
  (`DiTBlock`); cross-attention to a projected caption (`CaptionProjection`).

Module paths and parameter names are diffusers' ``PixArtTransformer2DModel``'s. The
timestep MLP (``TimestepEmbedding``) and the tanh-GELU feed-forward are
`search_spaces.common.layers`' (shared with `mobile_unet`). Quant arguments follow
`search_spaces.common.layers.QuantSource`: a candidate tuple (supernet) or a plan.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding
from torch import Tensor, nn

from nas.elastic import (
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
    segments,
)
from nas.quant.layers import QuantArg
from search_spaces.common.layers import FeedForward, QuantSource, TimestepEmbedding, quant_for
from search_spaces.mobile_dit.config import NORM_EPS, TIME_FREQ_DIM


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


class CombinedTimestepEmbeddings(nn.Module):
    """`PixArtAlphaCombinedTimestepSizeEmbeddings` without additional conditions."""

    def __init__(self, width: int, quant: QuantSource) -> None:
        super().__init__()
        prefix = "adaln_single.emb.timestep_embedder"
        self.timestep_embedder = TimestepEmbedding(TIME_FREQ_DIM, width, quant, prefix)

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

    def __init__(self, width: int, quant: QuantSource) -> None:
        super().__init__()
        self.width = width
        self.emb = CombinedTimestepEmbeddings(width, quant)
        self.silu = nn.SiLU()
        self.linear = ElasticLinear(
            width, 6 * width, bias=True, quant=quant_for(quant, "adaln_single.linear")
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

    def __init__(self, in_features: int, width: int, quant: QuantSource) -> None:
        super().__init__()
        self.linear_1 = ElasticLinear(
            in_features, width, quant=quant_for(quant, "caption_projection.linear_1")
        )
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = ElasticLinear(
            width, width, quant=quant_for(quant, "caption_projection.linear_2")
        )

    def set_active(self, width: int | None) -> None:
        configure(self.linear_1, out=width)
        configure(self.linear_2, inp=width, out=width)

    def forward(self, caption: Tensor) -> Tensor:
        return self.linear_2(self.act_1(self.linear_1(caption)))


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
        quant: QuantSource,
        prefix: str,
    ) -> None:
        super().__init__()

        def aq(name: str) -> dict[str, QuantArg]:
            names = ("to_q", "to_k", "to_v", "to_out.0")
            return {n: quant_for(quant, f"{prefix}.{name}.{n}") for n in names}

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
        self.ff = FeedForward(width, inner, "gelu-approximate", quant, f"{prefix}.ff")
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
