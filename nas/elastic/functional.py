"""Pure slicing maths of elastic layers (once-for-all style weight sharing).

Cai et al., "Once-for-All" (ICLR 2020): a sub-network's layer uses the first
`out` output channels and the first `in` input channels of the largest
layer's weights. U-Net decoders concatenate a skip tensor to the upsampled
one, so their input channels come in *segments*: the active channels of
each part, placed at that part's offset in the max-width concatenation.
`ChannelSel` is either an int (a prefix) or such a segment list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ChannelSel = int | tuple[tuple[int, int], ...] | None
"""None: all channels; int n: the first n; ((offset, length), ...): segments."""


def segments(parts: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Segments of a concatenation: `parts` = [(active, max), ...] in concat order."""
    out, offset = [], 0
    for active, maximum in parts:
        if not 0 < active <= maximum:
            raise ValueError(f"active width {active} must be in 1..{maximum}")
        out.append((offset, active))
        offset += maximum
    return tuple(out)


def sel_size(sel: ChannelSel, full: int) -> int:
    if sel is None:
        return full
    if isinstance(sel, int):
        return sel
    return sum(n for _, n in sel)


def is_full(sel: ChannelSel, full: int) -> bool:
    if sel is None:
        return True
    if isinstance(sel, int):
        return sel == full
    return sel == ((0, full),)


def select(t: Tensor, dim: int, sel: ChannelSel) -> Tensor:
    """The channels `sel` of `t` along `dim` (a view for prefixes, a copy for segments)."""
    if sel is None:
        return t
    if isinstance(sel, int):
        return t.narrow(dim, 0, sel)
    if len(sel) == 1:
        return t.narrow(dim, sel[0][0], sel[0][1])
    return torch.cat([t.narrow(dim, off, n) for off, n in sel], dim=dim)


def slice_weight(w: Tensor, out: ChannelSel, inp: ChannelSel) -> Tensor:
    """Conv (O, I, kh, kw) or linear (O, I) weight restricted to `out` × `inp` channels."""
    return select(select(w, 0, out), 1, inp)


def slice_vector(v: Tensor | None, sel: ChannelSel) -> Tensor | None:
    """Bias / norm affine / per-channel quantizer parameter restricted to `sel`."""
    return None if v is None else select(v, 0, sel)


def head_channels(heads: int, head_dim: int) -> int:
    """Attention heads are sliced whole: the first `heads` heads of `head_dim` each."""
    return heads * head_dim
