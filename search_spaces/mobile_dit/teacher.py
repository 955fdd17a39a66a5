"""`mobile_dit` teachers: the matching `PixArtTransformer2DModel` config, its check, and
loading a teacher's weights into the supernet by name.

At its largest architecture the supernet *is* diffusers'
``PixArtTransformer2DModel(norm_type="ada_norm_single", activation_fn="gelu-approximate",
use_additional_conditions=False)`` (PixArt-α, Chen et al., ICLR 2024): same module paths
and parameter names, so a PixArt state dict maps by name. ``use_additional_conditions``
(PixArt's resolution / aspect-ratio embedders) is refused with a `ConfigError`. Config
reading and the name-by-name state copy are `nas.diffusers_compat`'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.diffusers_compat import copy_teacher_state, read_teacher_config
from nas.errors import ConfigError
from search_spaces.common.family import effective_config, init_defaults
from search_spaces.mobile_dit.config import NORM_EPS, MobileDiTConfig

if TYPE_CHECKING:
    from search_spaces.mobile_dit.supernet import MobileDiTSupernet

log = logging.getLogger(__name__)


def expected_teacher_config(cfg: MobileDiTConfig) -> dict[str, Any]:
    """The `PixArtTransformer2DModel` config whose weights a supernet of `cfg` can take."""
    return {
        "num_attention_heads": cfg.max_heads,
        "attention_head_dim": cfg.dim_head,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "num_layers": cfg.max_depth,
        "cross_attention_dim": cfg.max_width if cfg.cross_attention else None,
        "attention_bias": True,
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "activation_fn": "gelu-approximate",
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": NORM_EPS,
        "interpolation_scale": cfg.interpolation_scale,
        "use_additional_conditions": False,
        "caption_channels": cfg.caption_channels if cfg.cross_attention else None,
        "attention_type": "default",
    }


def check_teacher_config(cfg: MobileDiTConfig, config: Mapping[str, Any]) -> None:
    """Raise `ConfigError` naming the first key where a PixArt config differs from ours."""
    from diffusers import PixArtTransformer2DModel

    defaults = init_defaults(PixArtTransformer2DModel)
    got = effective_config(PixArtTransformer2DModel, config)
    # Effective values of PixArt's None defaults (see its __init__).
    if got.get("out_channels") is None:
        got["out_channels"] = got["in_channels"]
    if got.get("use_additional_conditions") is None:
        got["use_additional_conditions"] = got["sample_size"] == 128
    if got.get("interpolation_scale") is None:
        got["interpolation_scale"] = max(got["sample_size"] // 64, 1)
    for key, want in expected_teacher_config(cfg).items():
        have = got.get(key)
        same = (
            math.isclose(float(have), float(want))
            if isinstance(want, float) and isinstance(have, (int, float))
            else have == want
        )
        if not same:
            hint = (
                "this family supports use_additional_conditions=False only"
                if key == "use_additional_conditions"
                else "build the space with a MobileDiTConfig whose max architecture matches "
                "the teacher, or pick a matching teacher"
            )
            raise ConfigError(
                f"teacher config {key}={have!r} does not match the supernet's max "
                f"architecture ({key}={want!r}); {hint}"
            )
    extra = sorted(set(got) - set(defaults) - {"_class_name", "_diffusers_version"})
    if extra:
        log.warning("teacher config has keys unknown to PixArtTransformer2DModel: %s", extra)


def load_teacher(net: MobileDiTSupernet, path: str | Path) -> None:
    """Initialise all shared weights from a `PixArtTransformer2DModel.save_pretrained` dir.

    The config is checked first (`check_teacher_config`); weights are read from
    safetensors only. Learned quantizer parameters keep their initial values.
    """
    from diffusers import PixArtTransformer2DModel

    p, config = read_teacher_config(path, "PixArtTransformer2DModel", "transformer")
    check_teacher_config(net.cfg, config)
    teacher = PixArtTransformer2DModel.from_pretrained(
        p, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
    )
    copy_teacher_state(net, teacher.state_dict())
    log.info("initialised %s from teacher %s", net.space.name, p)
