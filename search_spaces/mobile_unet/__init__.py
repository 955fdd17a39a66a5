"""`mobile_unet`: an elastic Stable-Diffusion-style conditional U-Net — space, supernet, model.

Architecture
------------
At its largest sample the supernet *is* diffusers' `UNet2DConditionModel` (the
latent-diffusion U-Net of Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022) configured with
``down_block_types`` = `CrossAttnDownBlock2D` (`DownBlock2D` at a stage whose
attention depth options are all 0), `UNetMidBlock2DCrossAttn`, up blocks
`CrossAttnUpBlock2D` / `UpBlock2D`, ``use_linear_projection=True``, GEGLU
feed-forward, ``flip_sin_to_cos=True, freq_shift=0``, SiLU, GroupNorm with
``norm_num_groups`` groups. Module paths and parameter names are diffusers'
(``down_blocks.0.resnets.1.conv1``, ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q``,
``down_blocks.0.downsamplers.0.conv``, ``mid_block.attentions.0.proj_in``,
``up_blocks.1.resnets.2.conv_shortcut``, ``conv_in``, ``time_embedding.linear_1``,
``conv_norm_out``, ``conv_out``), so a diffusers state dict maps by name
(`MobileUNetSupernet.load_teacher`; `diffusers_config(config)` gives the
matching `UNet2DConditionModel` kwargs). The numerics follow diffusers 0.42:
ResnetBlock2D (norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 →
SiLU → dropout → conv2, plus a 1×1 shortcut), Transformer2DModel with linear
projections (GroupNorm eps 1e-6 → tokens → proj_in → blocks → proj_out → +x),
BasicTransformerBlock (LayerNorm / self-attn / LayerNorm / cross-attn /
LayerNorm / GEGLU FF, each with a residual), Downsample2D (3×3 conv, stride 2,
padding 1), Upsample2D (nearest ×2, 3×3 conv), the skip stack of
`UNet2DConditionModel.forward`.

What the search shrinks, and where it comes from
------------------------------------------------
Weights are shared once-for-all style (Cai et al., ICLR 2020): a sub-network
uses the first channels / heads / blocks of the largest weights. The
dimensions are those of on-device SD work: fewer ResNet and transformer blocks
per resolution and no attention at high resolution (SnapFusion, Li et al.,
NeurIPS 2023; BK-SDM, Kim et al., 2023), narrower stages and heads, per-block
ResNet inner widths (the channel granularity of PaS, Li et al.,
"Pruning-as-Search", 2022), and a quantization scheme per layer (mixed
precision as in HAQ, Wang et al., CVPR 2019). The labels (``stage.{s}.width``,
``.depth``, ``.attn``, ``.heads``, ``mid.heads``, ResNet ``.inner`` ratios and one
``<module path>.quant`` per conv / linear) and the spec of a sample are described in
`search_spaces.mobile_unet.space`.

Fixed parts (documented decisions)
----------------------------------
- Mid block: resnet → transformer → resnet, always present; its width is
  ``stage.{n-1}.width`` (residual), its transformer depth is fixed
  (`MobileUNetConfig.mid_attn_depth`, which must equal the last stage's largest
  attention depth when that stage has attention, as diffusers shares
  ``transformer_layers_per_block[-1]``), its heads are ``mid.heads`` and its two
  ResNet inner widths are searched.
- Time embedding: ``time_proj`` dim = max width of stage 0 and temb = 4× that
  (diffusers' defaults at the max model), never sliced; only their quant schemes
  are searched.
- The transformer token width is the stage width; the attention inner width is
  ``heads × dim_head`` and the GEGLU inner width ``4 × width`` (diffusers' mult).
- Shortcuts: up-block ResNets always have ``conv_shortcut`` (their input is a
  concatenation). A down stage's first ResNet has one whenever the previous
  stage's width options and this stage's allow in ≠ out — even where the max
  model has in == out (e.g. SD's 1280 → 1280) and diffusers has none. Such a
  shortcut is always applied (also when a sample has in == out), so the
  standalone model keeps it (``down_shortcut`` flags). When a teacher lacks it,
  `load_teacher` initialises it as the identity 1×1 conv (weight I, bias 0):
  exact at the max architecture, "first channels, zero-padded" below it.
- Teachers: `MobileUNetSupernet.load_teacher` copies a `UNet2DConditionModel` whose
  config equals `diffusers_config(config)` by name (`search_spaces.mobile_unet.teacher`).

Modules
-------
- `config`: `MobileUNetConfig`, the max-architecture layout of a config and the
  concrete sizes of a sample; the registered configs.
- `space`: the labels (`make_space`), canonical samples and the `ArchSpec` of a sample.
- `blocks`: the diffusers-faithful building blocks (ResnetBlock2D, Transformer2DModel,
  BasicTransformerBlock, Down/Up/Mid blocks, samplers) over `nas.elastic` layers; the
  time embedding MLP and the GEGLU feed-forward are `search_spaces.common.layers`'.
- `model`: the standalone `MobileUNet` (what `extract` and export produce).
- `teacher`: `diffusers_config`, `check_teacher_config`, loading a teacher by name.
- `supernet`: `MobileUNetSupernet`.
- `latency`: `block_model` and `standalone_model`, the family's latency hooks.

Importing this package registers the spaces ``mobile_unet``, ``mobile_unet_sd15``,
``test_mobile_unet`` and ``test_mobile_unet_attn`` (once: `import search_spaces`).
"""

from __future__ import annotations

from nas.space import SearchSpace
from nas.supernet import QUANT_SUFFIX, Family, register_space
from search_spaces.common.layers import GEGLU, FeedForward, TimestepEmbedding
from search_spaces.mobile_unet.blocks import (
    BasicTransformerBlock,
    DownBlock,
    Downsample2D,
    MidBlock,
    ResnetBlock2D,
    Transformer2DModel,
    UpBlock,
    Upsample2D,
)
from search_spaces.mobile_unet.config import (
    ATTN_NORM_EPS,
    DEFAULT_QUANT,
    FAMILY_NAME,
    FF_MULT,
    LN_EPS,
    MOBILE_UNET,
    MOBILE_UNET_SD15,
    RESNET_EPS,
    TEST_MOBILE_UNET,
    TEST_MOBILE_UNET_ATTN,
    MobileUNetConfig,
    inner_width,
)
from search_spaces.mobile_unet.latency import (
    HeadBlock,
    TimeEmbeddingBlock,
    TransformerIOBlock,
    block_model,
    standalone_model,
)
from search_spaces.mobile_unet.model import MobileUNet, example_inputs, standalone_config
from search_spaces.mobile_unet.space import make_space, max_layer_paths
from search_spaces.mobile_unet.supernet import MobileUNetSupernet
from search_spaces.mobile_unet.teacher import check_teacher_config, diffusers_config


def make_supernet(cfg: MobileUNetConfig, space: SearchSpace) -> MobileUNetSupernet:
    return MobileUNetSupernet(cfg, space)


FAMILY = Family(FAMILY_NAME, make_space, make_supernet, MobileUNet, block_model, standalone_model)

register_space("mobile_unet", FAMILY, MOBILE_UNET)
register_space("mobile_unet_sd15", FAMILY, MOBILE_UNET_SD15)
register_space("test_mobile_unet", FAMILY, TEST_MOBILE_UNET)
register_space("test_mobile_unet_attn", FAMILY, TEST_MOBILE_UNET_ATTN)

__all__ = [
    "ATTN_NORM_EPS",
    "DEFAULT_QUANT",
    "FAMILY",
    "FAMILY_NAME",
    "FF_MULT",
    "GEGLU",
    "LN_EPS",
    "MOBILE_UNET",
    "MOBILE_UNET_SD15",
    "QUANT_SUFFIX",
    "RESNET_EPS",
    "TEST_MOBILE_UNET",
    "TEST_MOBILE_UNET_ATTN",
    "BasicTransformerBlock",
    "DownBlock",
    "Downsample2D",
    "FeedForward",
    "HeadBlock",
    "MidBlock",
    "MobileUNet",
    "MobileUNetConfig",
    "MobileUNetSupernet",
    "ResnetBlock2D",
    "TimeEmbeddingBlock",
    "TimestepEmbedding",
    "Transformer2DModel",
    "TransformerIOBlock",
    "UpBlock",
    "Upsample2D",
    "block_model",
    "check_teacher_config",
    "diffusers_config",
    "example_inputs",
    "inner_width",
    "make_space",
    "make_supernet",
    "max_layer_paths",
    "standalone_config",
    "standalone_model",
]
