"""`mobile_unet` supernet: `MobileUNetSupernet`, the weight-sharing U-Net of a config.

Built at the max architecture by the standalone model's `_build` (so every module
path and parameter name is `MobileUNet`'s and diffusers'); `_configure` activates
a sample's widths, heads, inner widths and depths (once-for-all weight sharing, Cai
et al., ICLR 2020: the first channels / heads / blocks), `source_path` maps the
standalone paths that differ, `depth_units` gives differentiable depth its modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from nas.elastic import configure, segments
from nas.errors import InternalError
from nas.space import SearchSpace
from nas.spec import Sample
from nas.supernet import QUANT_SUFFIX, Supernet
from search_spaces.common.family import inputs_on
from search_spaces.mobile_unet import teacher
from search_spaces.mobile_unet.blocks import DownBlock, MidBlock, UpBlock
from search_spaces.mobile_unet.config import (
    FAMILY_NAME,
    MobileUNetConfig,
    _Active,
    _layout,
    _max_active,
    _resolve,
)
from search_spaces.mobile_unet.model import (
    MobileUNet,
    _arch_of,
    _build,
    _out_features,
    _quant_layers,
    _UNetForward,
    example_inputs,
    model_kwargs,
    standalone_config,
)
from search_spaces.mobile_unet.space import make_space, max_layer_paths


class MobileUNetSupernet(_UNetForward, Supernet):
    """The weight-sharing supernet of a `MobileUNetConfig` (diffusers layout at max)."""

    standalone_cls = MobileUNet

    def __init__(self, config: MobileUNetConfig, space: SearchSpace | None = None) -> None:
        space = space if space is not None else make_space(config)
        paths = max_layer_paths(config)
        super().__init__(space, {p + QUANT_SUFFIX: p for p in paths})
        self.config = config
        # The max architecture, built as the standalone model of the max sizes is.
        _build(self, _arch_of(model_kwargs(config, _max_active(config))))
        layers = dict(_quant_layers(self))
        if set(layers) != set(paths):
            # Both sides derive from `config` alone: a difference is a bug of the family.
            raise InternalError(
                "mobile_unet supernet layers and space labels disagree: "
                f"{sorted(set(layers) ^ set(paths))[:4]}"
            )
        for mod in layers.values():
            mod.init_quant(config.quant_options, _out_features(mod))
        self._act: _Active | None = None

    # -- teacher --------------------------------------------------------------------------
    @classmethod
    def from_diffusers(
        cls,
        path_or_model: str | Path | nn.Module,
        config: MobileUNetConfig | str = FAMILY_NAME,
        **kwargs: Any,
    ) -> MobileUNetSupernet:
        """A supernet of `config` (or a registered space name) initialised from a teacher."""
        if isinstance(config, str):
            from nas.supernet import get_space

            entry = get_space(config)
            net = entry.supernet()
        else:
            net = cls(config)
        net.load_teacher(path_or_model, **kwargs)
        return net

    def load_teacher(
        self, path_or_model: str | Path | nn.Module, *, allow_conv_projection: bool = False
    ) -> None:
        """Copy a `UNet2DConditionModel`'s weights by name (local directory or model instance).

        The teacher's config must equal the space's max architecture
        (`diffusers_config`), else `ConfigError` names the key. Shortcut convs
        the teacher lacks (max in == out) become the identity 1×1.
        `allow_conv_projection` accepts ``use_linear_projection=False`` teachers
        (SD-1.5) by reshaping their 1×1 conv proj_in/proj_out weights to linear.
        """
        teacher.load_teacher(self, path_or_model, allow_conv_projection=allow_conv_projection)

    # -- activation -----------------------------------------------------------------------
    def _configure(self, sample: Sample) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_active"):
                m.reset_active()
        cfg, lay = self.config, _layout(self.config)
        act = _resolve(cfg, sample)
        self._act = act
        n, w, W = lay.n, act.widths, lay.W
        configure(self.conv_in, out=w[0])
        for s in range(n):
            blk: DownBlock = self.down_blocks[s]  # type: ignore[assignment]
            d = act.depths[s]
            blk.active_depth = d
            for j in range(d):
                inp = (w[0] if s == 0 else w[s - 1]) if j == 0 else w[s]
                blk.resnets[j].set_active(inp, act.down_inner[s][j], w[s])
                if blk.attentions is not None:
                    blk.attentions[j].set_active(w[s], act.heads[s], act.attn[s])
            if blk.downsamplers is not None:
                configure(blk.downsamplers[0].conv, inp=w[s], out=w[s])
        mid: MidBlock = self.mid_block  # type: ignore[assignment]
        mid.resnets[0].set_active(w[-1], act.mid_inner[0], w[-1])
        mid.attentions[0].set_active(w[-1], act.mid_heads, cfg.mid_attn_depth)
        mid.resnets[1].set_active(w[-1], act.mid_inner[1], w[-1])
        for u in range(n):
            s = n - 1 - u
            blk: UpBlock = self.up_blocks[u]  # type: ignore[no-redef]
            d = act.depths[s]
            blk.active_depth = d if d < lay.D[s] else None
            prev = (w[s + 1], W[s + 1]) if s < n - 1 else (w[-1], W[-1])
            skip_last = (w[s - 1], W[s - 1]) if s > 0 else (w[0], W[0])
            for pos, j in enumerate([*range(d), lay.D[s]]):
                x_in = prev if pos == 0 else (w[s], W[s])
                skip = skip_last if pos == d else (w[s], W[s])
                # concat input: active channels of each part at its max-width offset
                blk.resnets[j].set_active(segments([x_in, skip]), act.up_inner[u][pos], w[s])
                if blk.attentions is not None:
                    blk.attentions[j].set_active(w[s], act.heads[s], act.attn[s])
            if blk.upsamplers is not None:
                configure(blk.upsamplers[0].conv, inp=w[s], out=w[s])
        configure(self.conv_norm_out, out=w[0])
        configure(self.conv_out, inp=w[0])

    def _reset_depth(self) -> None:
        self._act = None

    def source_path(self, path: str) -> str:
        """Standalone ``up_blocks.u.{resnets,attentions}.{d}`` ← supernet index max depth."""
        act = self._act
        if act is None or not path.startswith("up_blocks."):
            return path
        parts = path.split(".")
        if len(parts) < 4 or parts[2] not in ("resnets", "attentions"):
            return path
        lay = _layout(self.config)
        u = int(parts[1])
        s = lay.n - 1 - u
        if int(parts[3]) == act.depths[s] and act.depths[s] < lay.D[s]:
            parts[3] = str(lay.D[s])
        return ".".join(parts)

    def depth_units(self) -> list[tuple[str, str, int]]:
        """(module path, depth label, v): the module runs only when ``sample[label] >= v``.

        The hook of differentiable depth (`nas.policies.depth`), which gates these modules'
        residual contributions. ``stage.{s}.depth``: ResNet j (and its transformer) of the down
        stage and of up block u, for j >= the smallest depth option (up block u always runs its
        last ResNet). ``stage.{s}.attn``: each Transformer2DModel of the stage as a whole (v = 1)
        and its transformer block k >= 1 (v = k + 1).
        """
        cfg, lay = self.config, _layout(self.config)
        units: list[tuple[str, str, int]] = []
        for s in range(lay.n):
            u = lay.n - 1 - s
            blocks = (f"down_blocks.{s}", f"up_blocks.{u}")
            for j in range(cfg.depth_options[s][0], lay.D[s]):
                for blk in blocks:
                    units.append((f"{blk}.resnets.{j}", f"stage.{s}.depth", j + 1))
                    if lay.A[s] > 0:
                        units.append((f"{blk}.attentions.{j}", f"stage.{s}.depth", j + 1))
            if lay.A[s] == 0:
                continue
            for blk, count in zip(blocks, (lay.D[s], lay.D[s] + 1)):
                for j in range(count):
                    for k in range(cfg.attn_depth_options[s][0], lay.A[s]):
                        path = f"{blk}.attentions.{j}"
                        path += f".transformer_blocks.{k}" if k > 0 else ""
                        units.append((path, f"stage.{s}.attn", k + 1))
        return units

    def standalone_config(self, sample: Sample) -> dict[str, Any]:
        return standalone_config(self.config, self.space, sample)

    def example_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
        return inputs_on(self, example_inputs(self.config, batch, seed))
