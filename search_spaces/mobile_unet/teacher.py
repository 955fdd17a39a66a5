"""`mobile_unet` teachers: the matching `UNet2DConditionModel` config, its check, and
loading a teacher's weights into the supernet by name.

`load_teacher` reads a local ``save_pretrained`` directory (or a
pipeline directory's ``unet/``) or takes a model instance, and refuses any
config key that differs from `diffusers_config(config)` with a `ConfigError`
naming it. Real SD-1.5 checkpoints have ``use_linear_projection=False``
(1×1 conv proj_in / proj_out): refused by default, loaded with
``allow_conv_projection=True`` (the 1×1 kernels become linear weights; same
maths up to float rounding).
Shortcut convs the teacher lacks (a down stage's first ResNet where the max model
has in == out) become the identity 1×1 conv (weight I, bias 0): exact at the max
architecture, "first channels, zero-padded" below it. Config reading, the
name-by-name state copy and timestep normalisation are `nas.diffusers_compat`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nas.diffusers_compat import copy_teacher_state, read_teacher_config
from nas.errors import ConfigError
from search_spaces.common.family import effective_config
from search_spaces.mobile_unet.config import RESNET_EPS, MobileUNetConfig, _layout

if TYPE_CHECKING:
    from search_spaces.mobile_unet.supernet import MobileUNetSupernet

log = logging.getLogger(__name__)


def diffusers_config(cfg: MobileUNetConfig) -> dict[str, Any]:
    """`UNet2DConditionModel` kwargs of the space's max architecture (a compatible teacher)."""
    lay = _layout(cfg)
    n = lay.n
    tl = [lay.A[s] if lay.A[s] > 0 else 1 for s in range(n)]
    tl[-1] = cfg.mid_attn_depth
    return {
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": [
            "CrossAttnDownBlock2D" if lay.A[s] > 0 else "DownBlock2D" for s in range(n)
        ],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": [
            "CrossAttnUpBlock2D" if lay.A[s] > 0 else "UpBlock2D" for s in reversed(range(n))
        ],
        "block_out_channels": list(lay.W),
        "layers_per_block": list(lay.D),
        "transformer_layers_per_block": tl,
        "attention_head_dim": list(lay.H),  # diffusers' historical name for the number of heads
        "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups,
        "norm_eps": RESNET_EPS,
        "use_linear_projection": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }


# Settings a teacher must keep at diffusers' SD defaults (key → accepted values).
_FIXED_TEACHER = {
    "center_input_sample": (False,),
    "flip_sin_to_cos": (True,),
    "freq_shift": (0,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "downsample_padding": (1,),
    "mid_block_scale_factor": (1, 1.0),
    "act_fn": ("silu", "swish"),
    "norm_eps": (RESNET_EPS,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1, 1.0),
    "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
}


def _per_stage(value: Any, n: int, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        vals = list(value)
        if len(vals) != n:
            raise ConfigError(
                f"teacher config {key}={value!r} has {len(vals)} entries; the space has {n} stages"
            )
        out = []
        for v in vals:
            if isinstance(v, (list, tuple)):  # per-layer lists: accept only uniform ones
                if len(set(v)) != 1:
                    raise ConfigError(
                        f"teacher config {key}={value!r}: per-layer values must be uniform"
                    )
                v = v[0]
            out.append(v)
        return out
    return [value] * n


def check_teacher_config(
    cfg: MobileUNetConfig, teacher: Mapping[str, Any], *, allow_conv_projection: bool = False
) -> None:
    """Raise `ConfigError` naming the first key where `teacher` differs from the max model."""
    lay, n = _layout(cfg), _layout(cfg).n
    from diffusers import UNet2DConditionModel

    tc = effective_config(UNet2DConditionModel, teacher)
    want = diffusers_config(cfg)

    def fail(key: str, got: Any, expected: Any) -> None:
        raise ConfigError(
            f"teacher config {key}={got!r} does not match the space's max architecture "
            f"({key}={expected!r}). Use a teacher built with diffusers_config(space config), "
            "or a space whose largest options match the teacher."
        )

    for key in ("in_channels", "out_channels", "norm_num_groups"):
        if tc[key] != want[key]:
            fail(key, tc[key], want[key])
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        if list(tc[key]) != want[key]:
            fail(key, tc[key], want[key])
    if _per_stage(tc["layers_per_block"], n, "layers_per_block") != want["layers_per_block"]:
        fail("layers_per_block", tc["layers_per_block"], want["layers_per_block"])
    tl = _per_stage(tc["transformer_layers_per_block"], n, "transformer_layers_per_block")
    heads = _per_stage(tc["attention_head_dim"], n, "attention_head_dim")
    for s in range(n):
        # Stages without attention ignore these, except the last one (the mid block uses it).
        if lay.A[s] > 0 or s == n - 1:
            if tl[s] != want["transformer_layers_per_block"][s]:
                fail(
                    "transformer_layers_per_block",
                    tc["transformer_layers_per_block"],
                    want["transformer_layers_per_block"],
                )
            if heads[s] != lay.H[s]:
                fail("attention_head_dim", tc["attention_head_dim"], want["attention_head_dim"])
    cad = _per_stage(tc["cross_attention_dim"], n, "cross_attention_dim")
    if any(c != cfg.cross_attention_dim for c in cad):
        fail("cross_attention_dim", tc["cross_attention_dim"], cfg.cross_attention_dim)
    oca = tc.get("only_cross_attention", False)
    if any(_per_stage(oca, n, "only_cross_attention")):
        fail("only_cross_attention", oca, False)
    if tc["use_linear_projection"] is not True and not allow_conv_projection:
        fail("use_linear_projection", tc["use_linear_projection"], True)
    ted = tc.get("time_embedding_dim")
    if ted not in (None, lay.time_embed_dim):
        fail("time_embedding_dim", ted, lay.time_embed_dim)
    for key, ok in _FIXED_TEACHER.items():
        if key in tc and tc[key] not in ok:
            fail(key, tc[key], ok[0])
    if tc.get("sample_size") not in (None, cfg.sample_size):
        log.info(
            "teacher sample_size %s differs from the space's %s (not structural)",
            tc.get("sample_size"),
            cfg.sample_size,
        )


def load_teacher(
    net: MobileUNetSupernet, path_or_model: str | Path | nn.Module, *, allow_conv_projection: bool
) -> None:
    """`MobileUNetSupernet.load_teacher`: copy a `UNet2DConditionModel`'s weights into `net`."""
    if isinstance(path_or_model, nn.Module):
        conf = dict(path_or_model.config)  # type: ignore[arg-type]
        check_teacher_config(net.config, conf, allow_conv_projection=allow_conv_projection)
        teacher = path_or_model
    else:
        path, conf = read_teacher_config(path_or_model, "UNet2DConditionModel", "unet")
        check_teacher_config(net.config, conf, allow_conv_projection=allow_conv_projection)
        from diffusers import UNet2DConditionModel

        teacher = UNet2DConditionModel.from_pretrained(  # safetensors only: no unpickling
            path, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False
        )
    identity = [f"down_blocks.{s}.resnets.0.conv_shortcut" for s in range(_layout(net.config).n)]

    def adapt(v: Tensor, dst: Tensor) -> Tensor:
        if v.dim() == 4 and dst.dim() == 2 and v.shape[2:] == (1, 1):
            return v[:, :, 0, 0]  # conv 1×1 projection → linear
        return v

    state = teacher.state_dict()
    copy_teacher_state(
        net,
        state,
        may_lack=lambda k: any(k.startswith(p + ".") for p in identity),
        adapt=adapt,
    )
    own = net.state_dict()
    with torch.no_grad():
        for p in identity:
            if f"{p}.weight" in own and f"{p}.weight" not in state:
                w = own[f"{p}.weight"]  # (out, in, 1, 1)
                w.zero_()
                k = min(w.shape[0], w.shape[1])
                w[torch.arange(k), torch.arange(k), 0, 0] = 1.0
                own[f"{p}.bias"].zero_()
                log.info("%s: teacher has no shortcut (in == out); initialised as identity", p)
    log.info("loaded teacher weights into %s (%d tensors)", net.space.name, len(state))
