"""Tiny real diffusers components that tests create and save (nothing downloads)."""

from __future__ import annotations

from typing import Any


def tiny_vae(latent_channels: int = 1, **config: Any) -> Any:
    """A real, randomly initialised `AutoencoderKL` that halves the resolution.

    Two encoder blocks of width 8, seeded, in eval mode; `config` overrides or adds
    `AutoencoderKL` arguments (e.g. ``scaling_factor``, ``shift_factor``).
    """
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    args: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2,
        "block_out_channels": (8, 8),
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": 4,
        "sample_size": 16,
    }
    return AutoencoderKL(**{**args, **config}).eval()
