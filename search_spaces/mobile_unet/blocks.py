"""`mobile_unet` building blocks: diffusers' U-Net modules over `nas.elastic` layers.

The blocks of the latent-diffusion U-Net (Rombach et al., "High-Resolution Image
Synthesis with Latent Diffusion Models", CVPR 2022) as diffusers' `UNet2DConditionModel`
builds them, with diffusers' module and parameter names. The numerics follow
diffusers 0.42:
ResnetBlock2D (norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 →
SiLU → dropout → conv2, plus a 1×1 shortcut), Transformer2DModel with linear
projections (GroupNorm eps 1e-6 → tokens → proj_in → blocks → proj_out → +x),
BasicTransformerBlock (LayerNorm / self-attn / LayerNorm / cross-attn /
LayerNorm / GEGLU FF, each with a residual), Downsample2D (3×3 conv, stride 2,
padding 1), Upsample2D (nearest ×2, 3×3 conv). The time embedding MLP and the GEGLU
feed-forward are `search_spaces.common.layers`' (shared with `mobile_dit`).

Each block is elastic (once-for-all weight sharing, Cai et al., ICLR 2020):
``set_active`` keeps the first channels / heads of its max weights, and the depth of
a Transformer2DModel / down / up block keeps a prefix (see `UpBlock` for the one
exception). The same classes build the supernet at max size and a standalone model
at its exact sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.elastic import (
    ChannelSel,
    ElasticAttention,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
)
from search_spaces.common.layers import FeedForward
from search_spaces.mobile_unet.config import ATTN_NORM_EPS, FF_MULT, LN_EPS, RESNET_EPS


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


@dataclass(frozen=True)
class StageDims:
    """What the blocks of one U-Net stage share: the stage's width, its attention's shape
    (depth 0: none), the time-embedding width and the GroupNorm groups."""

    width: int
    attn_depth: int
    heads: int
    dim_head: int
    cross_dim: int
    temb: int
    groups: int

    def resnet(self, in_ch: int, inner: int, shortcut: bool) -> ResnetBlock2D:
        return ResnetBlock2D(in_ch, inner, self.width, self.temb, self.groups, shortcut)

    def attentions(self, n: int) -> nn.ModuleList | None:
        """One Transformer2DModel per resnet of the stage, or none without attention."""
        if self.attn_depth == 0:
            return None
        return nn.ModuleList(
            [
                Transformer2DModel(
                    self.width,
                    self.heads,
                    self.dim_head,
                    self.attn_depth,
                    self.cross_dim,
                    self.groups,
                )
                for _ in range(n)
            ]
        )


class _ElasticDepthStage(nn.Module):
    """A stage whose resnets (and their transformers) run to an active depth."""

    active_depth: int | None = None

    def reset_active(self) -> None:
        self.active_depth = None


class DownBlock(_ElasticDepthStage):
    """CrossAttnDownBlock2D (`attentions` present) or DownBlock2D; elastic depth keeps a prefix."""

    def __init__(
        self,
        in_ch: int,
        inner: Sequence[int],
        dims: StageDims,
        shortcut0: bool,
        add_downsample: bool,
    ) -> None:
        super().__init__()
        out_ch = dims.width
        self.resnets = nn.ModuleList(
            [
                dims.resnet(in_ch if j == 0 else out_ch, c, shortcut0 and j == 0)
                for j, c in enumerate(inner)
            ]
        )
        self.attentions = dims.attentions(len(inner))
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)]) if add_downsample else None

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


class UpBlock(_ElasticDepthStage):
    """CrossAttnUpBlock2D / UpBlock2D: pop a skip, concat, resnet (+ transformer); upsample.

    With elastic depth d (< max D) it runs resnets 0..d-1 and then resnet D (the
    one built for the other skip width), i.e. d+1 blocks like the standalone's.
    """

    def __init__(
        self,
        prev_ch: int,
        skip_last_ch: int,
        inner: Sequence[int],
        dims: StageDims,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        last, out_ch = len(inner) - 1, dims.width
        self.resnets = nn.ModuleList(
            [
                dims.resnet(
                    (prev_ch if j == 0 else out_ch) + (skip_last_ch if j == last else out_ch),
                    c,
                    True,
                )
                for j, c in enumerate(inner)
            ]
        )
        self.attentions = dims.attentions(len(inner))
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None

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
