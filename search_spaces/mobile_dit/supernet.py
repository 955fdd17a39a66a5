"""`mobile_dit` supernet: `MobileDiTSupernet`, the weight-sharing DiT of a config.

Built at the max architecture by the trunk the standalone model uses; `_configure`
activates a sample's width, depth, per-block heads and feed-forward widths
(once-for-all weight sharing, Cai et al., ICLR 2020: the first channels / heads /
blocks of the largest weights). Teacher loading: `search_spaces.mobile_dit.teacher`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from nas.elastic import configure
from nas.space import SearchSpace
from nas.spec import Sample
from nas.supernet import QUANT_SUFFIX, Supernet
from search_spaces.common.family import inputs_on
from search_spaces.mobile_dit import teacher
from search_spaces.mobile_dit.config import MobileDiTConfig, ff_inner
from search_spaces.mobile_dit.model import MobileDiT, _DiTTrunk, example_inputs, standalone_config
from search_spaces.mobile_dit.space import _all_layer_paths, _block_labels, _resolve


class MobileDiTSupernet(_DiTTrunk, Supernet):
    """Weight-sharing supernet of a `MobileDiTConfig` at its max architecture."""

    standalone_cls = MobileDiT

    def __init__(self, cfg: MobileDiTConfig, space: SearchSpace) -> None:
        quant_paths = {p + QUANT_SUFFIX: p for p in _all_layer_paths(cfg)}
        super().__init__(space, quant_paths)
        self.cfg = cfg
        self._build(
            sample_size=cfg.sample_size,
            patch_size=cfg.patch_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.out_ch,
            width=cfg.max_width,
            heads=[cfg.max_heads] * cfg.max_depth,
            dim_head=cfg.dim_head,
            ff_inner=[ff_inner(cfg.mlp_ratios[-1], cfg.max_width)] * cfg.max_depth,
            cross_attention=cfg.cross_attention,
            caption_channels=cfg.caption_channels if cfg.cross_attention else None,
            interpolation_scale=cfg.interpolation_scale,
            quant=tuple(cfg.quant),
        )
        self.active_depth: int | None = None

    # -- activation ---------------------------------------------------------------------
    def _depth(self) -> int:
        return self.active_depth or len(self.transformer_blocks)

    def _configure(self, sample: Sample) -> None:
        a = _resolve(self.cfg, sample)
        w = a.width
        self.active_depth = a.depth
        self.pos_embed.set_active(w)
        self.adaln_single.set_active(w)
        if self.caption_projection is not None:
            self.caption_projection.set_active(w)
        for i, block in enumerate(self.transformer_blocks):
            h_lab, r_lab = _block_labels(i)
            block.set_active(w, int(sample[h_lab]), ff_inner(sample[r_lab], w))
        configure(self.proj_out, inp=w)

    def _reset_depth(self) -> None:
        self.active_depth = None

    def depth_units(self) -> list[tuple[str, str, int]]:
        """(module path, depth label, v): block i runs only when ``sample["depth"] >= i + 1``.

        The hook of differentiable depth (`nas.policies.depth`), which gates these blocks'
        residual contributions.
        """
        lo = self.cfg.depths[0]
        return [(f"transformer_blocks.{i}", "depth", i + 1) for i in range(lo, self.cfg.max_depth)]

    def sliced_state(self) -> dict[str, Tensor]:
        """The final (2, w) scale-shift table of the active width."""
        w = self._active["width"] if self._active else self.cfg.max_width
        return {"scale_shift_table": self.scale_shift_table[:, :w].detach().clone()}

    def standalone_config(self, sample: Sample) -> dict[str, Any]:
        return standalone_config(self.cfg, self.space, sample)

    def example_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
        return inputs_on(self, example_inputs(self.cfg, batch, seed))

    # -- teacher ------------------------------------------------------------------------
    def expected_teacher_config(self) -> dict[str, Any]:
        """The `PixArtTransformer2DModel` config whose weights this supernet can take."""
        return teacher.expected_teacher_config(self.cfg)

    def check_teacher_config(self, config: Mapping[str, Any]) -> None:
        """Raise `ConfigError` naming the first key where a PixArt config differs from ours."""
        teacher.check_teacher_config(self.cfg, config)

    def load_teacher(self, path: str | Path) -> None:
        """Initialise all shared weights from a `PixArtTransformer2DModel.save_pretrained` dir.

        The config is checked first (`check_teacher_config`); weights are read from
        safetensors only. Learned quantizer parameters keep their initial values.
        """
        teacher.load_teacher(self, path)
