"""`mobile_unet` latency hooks: the block micro-models and the standalone model hook.

`block_model(kind, dims, batch)` (the family's `Family.block_model`) builds the
float micro-model of one spec block from the family's classes at exactly its dims,
with example inputs, for latency tables: ``conv_in`` (ElasticConv2d),
``time_embedding`` (time_proj + TimestepEmbedding), ``resnet`` (ResnetBlock2D),
``transformer_io`` (a Transformer2DModel without blocks: norm, proj_in/out,
residual), ``transformer`` (BasicTransformerBlock), ``downsample`` /
``upsample`` (Downsample2D / Upsample2D), ``conv_out`` (conv_norm_out → SiLU →
conv_out).

`standalone_model(config, space, sample, batch)` (`Family.standalone_model`) is the
float `MobileUNet` of a sample, built without the supernet, with its inputs.
"""

from __future__ import annotations

from typing import Any

from diffusers.models.embeddings import Timesteps
from torch import Tensor, nn

from nas.block_models import BlockInputs, Builder, Built, block_model_hook
from nas.diffusers_compat import standalone_hook
from nas.elastic import ElasticConv2d, ElasticGroupNorm
from nas.errors import ConfigError
from search_spaces.common.layers import TimestepEmbedding
from search_spaces.mobile_unet.blocks import (
    BasicTransformerBlock,
    Downsample2D,
    ResnetBlock2D,
    Transformer2DModel,
    Upsample2D,
)
from search_spaces.mobile_unet.config import FAMILY_NAME, FF_MULT, RESNET_EPS
from search_spaces.mobile_unet.model import MobileUNet, example_inputs, standalone_config


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


standalone_model = standalone_hook(MobileUNet, standalone_config, example_inputs)
