"""How the shipped models meet a diffusers denoiser's call contract.

diffusers pipelines call a denoiser with every keyword of the model class they were
written for (`UNet2DConditionModel.forward`, `PixArtTransformer2DModel.forward`) and
pass None or an empty value for each feature they do not use. The mobile models take
the same keywords: `is_empty` ones are ignored, and one the model cannot honour is
refused by `refuse` / `refuse_masking` with the reason, rather than silently computing
something else. `check_fixed_config` guards the config keys that record, for the
pipelines that read them, what a model does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from nas.errors import ConfigError


def is_empty(value: Any) -> bool:
    """None, an empty sequence / mapping, or a mapping whose values are all None.

    The last is how PixArtAlphaPipeline passes micro-conditions it does not use
    (``{"resolution": None, "aspect_ratio": None}``).
    """
    if value is None:
        return True
    if isinstance(value, Mapping):
        return all(v is None for v in value.values())
    if isinstance(value, (tuple, list)):
        return len(value) == 0
    return False


def refuse(model: str, name: str, value: Any, why: str) -> None:
    """Raise ValueError naming `name` and `why` unless `value` `is_empty`."""
    if not is_empty(value):
        raise ValueError(f"{model} cannot honour {name}: {why}; pass None")


def refuse_masking(model: str, name: str, mask: Tensor | None) -> None:
    """Refuse a keep-mask (diffusers' convention: 1 keep, 0 drop) that drops a position.

    A mask of ones changes nothing, so it is accepted: callers that always build one
    (padding of a full-length prompt) still work.
    """
    if mask is None:
        return
    keeps_all = bool(mask.all()) if mask.dtype == torch.bool else bool((mask == 1).all())
    if not keeps_all:
        raise ValueError(
            f"{model} cannot honour {name} with masked positions: its attention has no "
            "masking, so masked tokens would be attended to; pass None (or a mask of ones)"
        )


def check_fixed_config(model: str, given: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    """ConfigError when a config key of `fixed` (what the model has) is set otherwise."""
    for key, want in fixed.items():
        if given[key] != want:
            raise ConfigError(
                f"{model} config {key}={given[key]!r}: this model has no such feature, so "
                f"{key} can only be {want!r} (it is recorded for diffusers pipelines that read it)"
            )
