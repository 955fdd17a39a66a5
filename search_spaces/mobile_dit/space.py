"""`mobile_dit` space: the labels, the layers of one architecture and its spec (pure).

Labels of the space
-------------------
``depth``
    number of transformer blocks kept (the first ``depth``; later ones are skipped).
``width``
    hidden width of the whole model. One label: every block adds its output to the
    residual stream, and the patch embedding, adaLN-single, caption projection and final
    layer all read or write that stream. The 2-D sin-cos positional embedding is computed
    for the active width (cached per width), exactly as a standalone model of that width.
``blocks.<i>.heads``
    attention heads of block ``i`` (self- and cross-attention alike). ``dim_head`` is fixed
    at ``max(widths) // max(heads)``; heads are sliced whole (the first ``heads`` heads).
``blocks.<i>.mlp_ratio``
    feed-forward inner width of block ``i`` is ``mlp_ratio × width`` (the active width; the
    first ``inner`` units of ``ff.net.0.proj`` / ``ff.net.2`` are kept). The largest ratio
    must be 4 for PixArt's ``FeedForward(mult=4)`` to be the max architecture; the config
    refuses options that give a non-integer inner width.
``<module path>.quant``
    the quant scheme of that linear / conv: ``pos_embed.proj``, the timestep embedder's two
    linears, ``adaln_single.linear``, ``caption_projection.linear_{1,2}``, every attention
    projection, ``ff.net.0.proj``, ``ff.net.2`` and ``proj_out``. Options are the config's
    quant options, listed cheapest first (so ``space.max()`` is full precision).

Labels of blocks a sample's depth removes are reset to their defaults by ``canonicalize``.

``space.freeze(sample)`` gives stages ``embed`` (``patch_embed``, ``adaln_single``,
``caption_projection``), ``blocks`` (one ``dit_block`` per kept block) and ``out``
(``dit_final``). Each layer's ``label`` is its path + ``.quant``; its ``positions`` (per
sample) are the tokens it runs over: the patch count for the patch conv, attention
projections, feed-forward and ``proj_out``; the context length for ``to_k`` / ``to_v`` of
cross-attention and the caption projection; 1 for the timestep MLP and adaLN linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.quant.scheme import QuantScheme
from nas.space import Choice, SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, Sample, StageSpec
from nas.supernet import QUANT_SUFFIX
from search_spaces.mobile_dit.config import FAMILY_NAME, TIME_FREQ_DIM, MobileDiTConfig, ff_inner


# ---------------------------------------------------------------------------------------
# Layers of one architecture (shared by the space builder, quant labels and the model)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Arch:
    """The resolved structure of one sample (or of the max architecture)."""

    width: int
    heads: tuple[int, ...]  # per kept block
    inner: tuple[int, ...]  # ff inner width per kept block
    ratios: tuple[int | float, ...] = field(default=())

    @property
    def depth(self) -> int:
        return len(self.heads)


# (path, kind, in, out, positions): positions = tokens (or output pixels) of one sample.
Row = tuple[str, str, int, int, int]


def _block_layers(
    prefix: str,
    width: int,
    heads: int,
    dim_head: int,
    inner: int,
    cross: bool,
    tokens: int = 1,
    context_len: int = 1,
) -> list[Row]:
    """Every linear of one transformer block; queries, outputs and the FF run over the
    image tokens, cross-attention keys / values over the (projected) context."""
    att = heads * dim_head
    out = []
    for name in ("attn1", "attn2") if cross else ("attn1",):
        kv_n = context_len if name == "attn2" else tokens
        out += [
            (f"{prefix}.{name}.to_q", "linear", width, att, tokens),
            (f"{prefix}.{name}.to_k", "linear", width, att, kv_n),
            (f"{prefix}.{name}.to_v", "linear", width, att, kv_n),
            (f"{prefix}.{name}.to_out.0", "linear", att, width, tokens),
        ]
    out += [
        (f"{prefix}.ff.net.0.proj", "linear", width, inner, tokens),
        (f"{prefix}.ff.net.2", "linear", inner, width, tokens),
    ]
    return out


def _stem_layers(cfg: MobileDiTConfig, width: int) -> dict[str, list[Row]]:
    """Layers outside the blocks, grouped by the spec block they belong to.

    The patchify conv (kernel = stride = p, no padding) is a linear over flattened
    p×p patches: in = C·p², one position per patch, so params and MACs are exact.
    """
    p, n, m = cfg.patch_size, cfg.tokens, cfg.context_len
    groups: dict[str, list[Row]] = {
        "pos_embed": [("pos_embed.proj", "linear", cfg.in_channels * p * p, width, n)],
        "adaln_single": [
            ("adaln_single.emb.timestep_embedder.linear_1", "linear", TIME_FREQ_DIM, width, 1),
            ("adaln_single.emb.timestep_embedder.linear_2", "linear", width, width, 1),
            ("adaln_single.linear", "linear", width, 6 * width, 1),
        ],
    }
    if cfg.cross_attention:
        groups["caption_projection"] = [
            ("caption_projection.linear_1", "linear", cfg.caption_channels, width, m),
            ("caption_projection.linear_2", "linear", width, width, m),
        ]
    groups["proj_out"] = [("proj_out", "linear", width, p * p * cfg.out_ch, n)]
    return groups


def _all_layer_paths(cfg: MobileDiTConfig) -> list[str]:
    """Every conv / linear of the max architecture, in module order."""
    stem = _stem_layers(cfg, cfg.max_width)
    groups = ("pos_embed", "adaln_single", "caption_projection")
    paths = [p for g in groups for p, *_ in stem.get(g, [])]
    for i in range(cfg.max_depth):
        prefix = f"transformer_blocks.{i}"
        rows = _block_layers(
            prefix, cfg.max_width, cfg.max_heads, cfg.dim_head, 1, cfg.cross_attention
        )
        paths += [p for p, *_ in rows]
    return paths + ["proj_out"]


def _block_labels(i: int) -> tuple[str, str]:
    return f"blocks.{i}.heads", f"blocks.{i}.mlp_ratio"


def _resolve(cfg: MobileDiTConfig, sample: Mapping[str, Any]) -> _Arch:
    w, d = int(sample["width"]), int(sample["depth"])
    heads, ratios = [], []
    for i in range(d):
        h, r = _block_labels(i)
        heads.append(int(sample[h]))
        ratios.append(sample[r])
    return _Arch(w, tuple(heads), tuple(ff_inner(r, w) for r in ratios), tuple(ratios))


# ---------------------------------------------------------------------------------------
# Search space
# ---------------------------------------------------------------------------------------
def make_space(cfg: MobileDiTConfig, name: str) -> SearchSpace:
    """The flat space: depth, width, per-block heads / mlp ratio, one quant label per layer."""
    choices: dict[str, Choice] = {"depth": Choice(cfg.depths), "width": Choice(cfg.widths)}
    for i in range(cfg.max_depth):
        h, r = _block_labels(i)
        choices[h] = Choice(cfg.heads)
        choices[r] = Choice(cfg.mlp_ratios)
    for path in _all_layer_paths(cfg):
        choices[path + QUANT_SUFFIX] = Choice(cfg.quant)

    def canonicalize(sample: Sample) -> Sample:
        out = dict(sample)
        for i in range(int(sample["depth"]), cfg.max_depth):
            prefix = f"transformer_blocks.{i}."
            for lab in (*_block_labels(i), *(k for k in out if k.startswith(prefix))):
                out[lab] = choices[lab].default
        return out

    def builder(space: SearchSpace, sample: Sample) -> ArchSpec:
        return _freeze(cfg, space, sample)

    return SearchSpace(
        choices, name=name, version=cfg.version, builder=builder, canonicalize=canonicalize
    )


def _layer_specs(rows: list[Row], sample: Sample) -> tuple[LayerSpec, ...]:
    """Supernet and standalone paths agree here: each layer's label is its path + .quant."""
    return tuple(
        LayerSpec(p, kind, i, o, QuantScheme.parse(sample[p + QUANT_SUFFIX]), n, p + QUANT_SUFFIX)
        for p, kind, i, o, n in rows
    )


def _freeze(cfg: MobileDiTConfig, space: SearchSpace, sample: Sample) -> ArchSpec:
    """The full spec of a (canonical) sample: every block with its dims, every layer."""
    a = _resolve(cfg, sample)
    w, n = a.width, cfg.tokens
    grid = cfg.sample_size // cfg.patch_size
    stem = _stem_layers(cfg, w)
    embed = [
        BlockSpec(
            "pos_embed",
            "patch_embed",
            (
                ("in_channels", cfg.in_channels),
                ("width", w),
                ("patch_size", cfg.patch_size),
                ("H", cfg.sample_size),
                ("W", cfg.sample_size),
                ("tokens", n),
            ),
            _layer_specs(stem["pos_embed"], sample),
        ),
        BlockSpec(
            "adaln_single",
            "adaln_single",
            (("freq_dim", TIME_FREQ_DIM), ("width", w), ("out", 6 * w)),
            _layer_specs(stem["adaln_single"], sample),
        ),
    ]
    if cfg.cross_attention:
        embed.append(
            BlockSpec(
                "caption_projection",
                "caption_projection",
                (
                    ("caption_channels", cfg.caption_channels),
                    ("width", w),
                    ("context_len", cfg.context_len),
                ),
                _layer_specs(stem["caption_projection"], sample),
            )
        )
    blocks = []
    for i in range(a.depth):
        prefix = f"transformer_blocks.{i}"
        rows = _block_layers(
            prefix,
            w,
            a.heads[i],
            cfg.dim_head,
            a.inner[i],
            cfg.cross_attention,
            n,
            cfg.context_len,
        )
        blocks.append(
            BlockSpec(
                prefix,
                "dit_block",
                (
                    ("width", w),
                    ("tokens", n),
                    ("heads", a.heads[i]),
                    ("dim_head", cfg.dim_head),
                    ("mlp_ratio", a.ratios[i]),
                    ("ff_inner", a.inner[i]),
                    ("cross_attention", cfg.cross_attention),
                    ("context_len", cfg.context_len if cfg.cross_attention else 0),
                    ("context_dim", w if cfg.cross_attention else 0),
                ),
                _layer_specs(rows, sample),
            )
        )
    final = BlockSpec(
        "proj_out",
        "dit_final",
        (
            ("width", w),
            ("tokens", n),
            ("grid", grid),
            ("patch_size", cfg.patch_size),
            ("out_channels", cfg.out_ch),
        ),
        _layer_specs(stem["proj_out"], sample),
    )
    return ArchSpec(
        space.name,
        space.version,
        tuple(sample.items()),
        (
            StageSpec("embed", tuple(embed)),
            StageSpec("blocks", tuple(blocks)),
            StageSpec("out", (final,)),
        ),
        (("family", FAMILY_NAME), ("depth", a.depth), ("width", w)),
    )
