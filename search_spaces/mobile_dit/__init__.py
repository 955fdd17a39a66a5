"""Mobile DiT: a PixArt-α style diffusion transformer searched over width, depth, heads,
MLP ratio and a quantization scheme per linear layer.

Architectures followed
----------------------
- DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023): patchify
  with a fixed 2-D sin-cos positional embedding, a stack of transformer blocks, a modulated
  final layer and unpatchify.
- PixArt-α (Chen et al., "PixArt-α: Fast Training of Diffusion Transformer", ICLR 2024,
  §2.3): *adaLN-single* — one timestep MLP and one ``dim → 6·dim`` linear shared by all
  blocks, plus a learned per-block ``scale_shift_table`` (6, dim); cross-attention to a
  projected caption (here a text or class embedding).
- Once-for-all (Cai et al., ICLR 2020) weight sharing: every sub-network uses the first
  channels / heads / blocks of the largest weights (`nas.elastic`).

At its largest architecture the supernet *is* diffusers'
``PixArtTransformer2DModel(norm_type="ada_norm_single", activation_fn="gelu-approximate",
use_additional_conditions=False)``: same module paths and parameter names
(``pos_embed.proj``, ``adaln_single.emb.timestep_embedder.linear_{1,2}``,
``adaln_single.linear``, ``caption_projection.linear_{1,2}``,
``transformer_blocks.<i>.{attn1,attn2}.{to_q,to_k,to_v,to_out.0}``,
``transformer_blocks.<i>.ff.net.{0.proj,2}``, ``transformer_blocks.<i>.scale_shift_table``,
``scale_shift_table``, ``proj_out``), same numerics, so a PixArt state dict maps by name
(`MobileDiTSupernet.load_teacher`).

The labels (``depth``, ``width``, ``blocks.<i>.heads``, ``blocks.<i>.mlp_ratio`` and one
``<module path>.quant`` per linear / conv) are described in `search_spaces.mobile_dit.space`.

Decisions
---------
- ``use_additional_conditions`` (PixArt's resolution / aspect-ratio embedders) is not
  supported: the config and `load_teacher` refuse it with a `ConfigError`.
- ``out_channels`` defaults to ``in_channels`` (ε-prediction, no learned σ); set it to
  ``2 × in_channels`` for a PixArt-style learned-σ head. Other values are refused.
- The feed-forward inner width follows the *active* width (``mlp_ratio × width``), like a
  standalone DiT of that width; the attention inner width is ``heads × dim_head`` and does
  not depend on the width.
- With ``cross_attention=False`` the model has neither ``caption_projection`` nor ``attn2``
  (a PixArt with ``caption_channels=None, cross_attention_dim=None``).
- In the spec, the patchify conv ``pos_embed.proj`` (kernel = stride = p) is listed as a
  ``linear`` over flattened patches (in = C·p²), so its params and MACs are exact.

Specs (`space.freeze`): `search_spaces.mobile_dit.space`; block models for latency
tables (`block_model`): `search_spaces.mobile_dit.latency`.

Modules
-------
- `config`: `MobileDiTConfig` (fixed sizes and label options) and the registered configs.
- `space`: the labels (`make_space`), the layers of an architecture and its `ArchSpec`.
- `blocks`: the PixArt-α building blocks (patch embedding, adaLN-single, caption
  projection, `DiTBlock`, final layer) over `nas.elastic` layers; the timestep MLP and
  the feed-forward are `search_spaces.common.layers`' (shared with `mobile_unet`).
- `model`: the trunk shared by model and supernet, and the standalone `MobileDiT`.
- `supernet`: `MobileDiTSupernet`.
- `teacher`: the matching `PixArtTransformer2DModel` config, its check, loading by name.
- `latency`: `block_model` and `standalone_model`, the family's latency hooks.

Importing this package registers the spaces ``mobile_dit`` and ``test_mobile_dit``
(once: `import search_spaces`).
"""

from __future__ import annotations

from nas.space import SearchSpace
from nas.supernet import QUANT_SUFFIX, Family, register_space
from search_spaces.common.layers import FeedForward, GELUProj, TimestepEmbedding
from search_spaces.mobile_dit.blocks import (
    AdaLayerNormSingle,
    CaptionProjection,
    CombinedTimestepEmbeddings,
    DiTBlock,
    PatchEmbed,
)
from search_spaces.mobile_dit.config import (
    DEFAULT_QUANT,
    FAMILY_NAME,
    MOBILE_DIT,
    NORM_EPS,
    TEST_MOBILE_DIT,
    TIME_FREQ_DIM,
    MobileDiTConfig,
    ff_inner,
)
from search_spaces.mobile_dit.latency import (
    AdaLNSingleBlock,
    DiTBlockModel,
    DiTFinalBlock,
    block_model,
    standalone_model,
)
from search_spaces.mobile_dit.model import MobileDiT, example_inputs, standalone_config
from search_spaces.mobile_dit.space import make_space
from search_spaces.mobile_dit.supernet import MobileDiTSupernet


def make_supernet(cfg: MobileDiTConfig, space: SearchSpace) -> MobileDiTSupernet:
    return MobileDiTSupernet(cfg, space)


FAMILY = Family(FAMILY_NAME, make_space, make_supernet, MobileDiT, block_model, standalone_model)

register_space("mobile_dit", FAMILY, MOBILE_DIT)
register_space("test_mobile_dit", FAMILY, TEST_MOBILE_DIT)

__all__ = [
    "DEFAULT_QUANT",
    "FAMILY",
    "FAMILY_NAME",
    "MOBILE_DIT",
    "NORM_EPS",
    "QUANT_SUFFIX",
    "TEST_MOBILE_DIT",
    "TIME_FREQ_DIM",
    "AdaLNSingleBlock",
    "AdaLayerNormSingle",
    "CaptionProjection",
    "CombinedTimestepEmbeddings",
    "DiTBlock",
    "DiTBlockModel",
    "DiTFinalBlock",
    "FeedForward",
    "GELUProj",
    "MobileDiT",
    "MobileDiTConfig",
    "MobileDiTSupernet",
    "PatchEmbed",
    "TimestepEmbedding",
    "block_model",
    "example_inputs",
    "ff_inner",
    "make_space",
    "make_supernet",
    "standalone_config",
    "standalone_model",
]
