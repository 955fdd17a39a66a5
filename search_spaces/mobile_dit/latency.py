"""`mobile_dit` latency hooks: the block micro-models and the standalone model hook.

`block_model(kind, dims, batch)` (the family's `Family.block_model`) builds the float
micro-model of one spec block from the family's classes at exactly its dims, with example
inputs, for latency tables.
`standalone_model(config, space, sample, batch)` (`Family.standalone_model`) is the
float `MobileDiT` of a sample, built without the supernet, with its inputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nas.block_models import BlockInputs, Builder, Built, block_model_hook
from nas.diffusers_compat import standalone_hook
from nas.elastic import ElasticLayerNorm, ElasticLinear
from nas.errors import ConfigError
from search_spaces.mobile_dit.blocks import (
    AdaLayerNormSingle,
    CaptionProjection,
    DiTBlock,
    PatchEmbed,
    _final_layer,
)
from search_spaces.mobile_dit.config import FAMILY_NAME, NORM_EPS, TIME_FREQ_DIM
from search_spaces.mobile_dit.model import MobileDiT, example_inputs, standalone_config


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


standalone_model = standalone_hook(MobileDiT, standalone_config, example_inputs)
