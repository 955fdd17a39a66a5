"""PaS channel masks: one binary, straight-through mask per searchable width label.

Li et al., "Pruning-as-Search: Efficient Neural Architecture Search via Channel Pruning and
Structural Reparameterization" (PaS, IJCAI 2022): a depthwise 1×1 mask m ∈ R^C multiplies a
layer's output channels; the forward pass uses the binarised mask 1[m ≥ 0.5], the backward
pass treats the binarisation as the identity (straight-through estimator), and the count of
kept channels becomes the searched width.

Our choice of parametrisation (elastic weights keep the FIRST channels, so a mask must keep a
prefix): each width-like label X owns ONE real scalar f_X = v_X / max_X ∈ [min_X/max_X, 1]
(init 1.0: every channel on, as PaS initialises its masks at 1). A channel dimension of
max size N whose size scales with labels D (found by probing, see `probe_channel_sites`)
has the soft count c = N · Π_{X ∈ D} f_X and, in units of u channels (a whole attention head
of dim_head channels for a heads label, else 1 channel),

    s_i = σ((c/u − i − 0.5) / τ),   m_i = 1[s_i ≥ 0.5] + s_i − sg(s_i),   i = 0 .. N/u − 1  (2)

(sg = stop-gradient): the forward mask is exactly binary, 1[s_i ≥ 0.5] keeps the first
round(c/u) units (a prefix by construction), and the gradient reaches f_X through the units
near the boundary (τ = `tau` × N/u units, at least 0.25). This is still "a binary mask
thresholded at 0.5 with a straight-through gradient"; the real-valued mask s is a monotone
function of one scalar instead of C free entries (PaS' entries could switch off channel 3
and keep channel 7, which slicing cannot express).

Tying. Every dimension that depends on a label uses that label's f: a stage width masks
conv_in's output, every ResNet / transformer / sampler output in the stage, every input that
reads the stream (the two halves of an up block's concatenation each carry their own
label's mask), so tensors that are added or concatenated share one mask. Masks are applied
to the OUTPUT of every producing conv / linear and to the INPUT of every consuming one
(GroupNorm / LayerNorm turn zeroed channels into their bias; masking inputs stops that).

Soft value for the latency term: v_X = f_X · max_X, spread over the label's two nearest
options by linear interpolation (`soft_probs`, which the cost model re-exports as
`latency_tables.cost.soft_choice`). Snap: the count of units with
m ≥ 0.5 (round(v_X) for integer labels, v_X for ratio labels) → the nearest option, ties to
the larger.

Known approximations (documented, not hidden): the masked max network is not bit-equal to
the sliced sub-network, because GroupNorm / LayerNorm statistics are taken over the max
channel groups with zeros in them, per-channel weight quantizer ranges see all max input
channels and data-derived activation steps (LSQ's mean |x|) see the zeros. Tensors made
outside any conv / linear land on masked channels of a stream too (the DiT's sin-cos
positional embedding of the max width, its adaLN shift): consumers' input masks stop them
there, but they enter the norms. Head masks are exact (a zeroed head contributes nothing;
tested). Ratio labels (ResNet inner width) search r with inner ≈ r · width; rounding to
whole GroupNorm groups is left to the snapped sample.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas.elastic import ElasticConv2d, ElasticLinear
from nas.elastic.functional import ChannelSel
from nas.errors import ConfigError
from nas.space import SearchSpace

log = logging.getLogger(__name__)

Value = Any


@dataclass(frozen=True)
class Segment:
    """A run of channels of one layer side whose active size scales with `labels`.

    length: channels at the max architecture; unit: channels masked together.
    """

    length: int
    labels: tuple[str, ...]
    unit: int = 1


@dataclass(frozen=True)
class ChannelSite:
    """One side ("in" or "out") of an elastic conv / linear, as consecutive segments."""

    path: str
    side: str
    segments: tuple[Segment, ...]
    conv: bool  # channels on dim 1 (NCHW); else on the last dim (tokens, features)

    @property
    def size(self) -> int:
        return sum(s.length for s in self.segments)


def is_numeric_label(space: SearchSpace, label: str) -> bool:
    opts = space[label].options
    return all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts) and (
        min(opts) > 0
    )


def _full(layer: nn.Module, side: str) -> int:
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels if side == "in" else layer.out_channels
    return layer.in_features if side == "in" else layer.out_features  # type: ignore[return-value]


def _segments(sel: ChannelSel, full: int) -> tuple[tuple[int, int], ...]:
    if sel is None:
        return ((0, full),)
    if isinstance(sel, int):
        return ((0, sel),)
    return tuple(sel)


def probe_channel_sites(
    supernet: Any, labels: Sequence[str] | None = None
) -> tuple[list[ChannelSite], list[str]]:
    """Which labels size which channels, found by perturbation (no family code needed).

    Activates the space's max sample, then each numeric label (all of them, or `labels`) at
    its smallest option, and reads every elastic conv / linear's `active_in` / `active_out`.
    A segment whose length changes depends on that label. Returns the sites (layer sides
    with at least one dependent segment) and the width-like labels found, in space order.
    Depth-like labels (which only change which blocks run) size no channels and are absent.
    """
    space: SearchSpace = supernet.space
    layers = {
        p: m for p, m in supernet.named_modules() if isinstance(m, (ElasticConv2d, ElasticLinear))
    }
    top = space.max()

    def read(sample: dict[str, Value]) -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
        # None = the layer was left unconfigured: full at the max sample, a block that does
        # not run when a depth label is lowered (no channel information then).
        with supernet.activate(sample):
            return {
                (p, side): _segments(sel, _full(m, side))
                for p, m in layers.items()
                for side in ("in", "out")
                if (sel := getattr(m, f"active_{side}")) is not None or sample is top
            }

    ref = read(top)
    for (p, side), segs in ref.items():
        offset = 0
        for off, n in segs:
            if off != offset:
                raise ConfigError(
                    f"{p}.{side}: channel segments {segs} at the max sample do not tile the "
                    "dimension; PaS masks need the max architecture to use every channel"
                )
            offset += n
    candidates = [
        lab
        for lab in (labels if labels is not None else space.labels)
        if not lab.endswith(".quant") and len(space[lab]) > 1 and is_numeric_label(space, lab)
    ]
    deps: dict[tuple[str, str], list[set[str]]] = {k: [set() for _ in v] for k, v in ref.items()}
    for lab in candidates:
        lo, hi = min(space[lab].options), max(space[lab].options)
        alt = read(dict(top, **{lab: lo}))
        for key, segs in alt.items():
            r = ref[key]
            if segs == r:
                continue
            if len(r) == 1 < len(segs):
                # The max sample slices one run (e.g. adaLN's `dim → 6·dim` as a prefix) that
                # a smaller sample slices as k equal chunks: refine the max layout likewise.
                chunk = r[0][1] // len(segs)
                split = tuple((i * chunk, chunk) for i in range(len(segs)))
                if chunk * len(segs) == r[0][1] and all(a[0] == b[0] for a, b in zip(segs, split)):
                    ref[key] = r = split
                    deps[key] = [set(deps[key][0]) for _ in split]
            if len(segs) != len(r) or any(a[0] != b[0] for a, b in zip(segs, r)):
                raise ConfigError(
                    f"{key[0]}.{key[1]}: label {lab!r} changes the channel layout {r} → {segs}, "
                    "not only segment lengths; PaS masks need prefix (or segment-prefix) slicing"
                )
            for k, ((_, n), (_, n_max)) in enumerate(zip(segs, r)):
                if n == n_max:
                    continue
                deps[key][k].add(lab)
                want = n_max * lo / hi
                if abs(n - want) > max(0.25 * want, 1.0):
                    log.warning(
                        "%s.%s: label %s=%s gives %d channels, not ≈ %d × %s/%s; the soft "
                        "channel count (proportional) is approximate there",
                        *key,
                        lab,
                        lo,
                        n,
                        n_max,
                        lo,
                        hi,
                    )
    found = {lab for ds in deps.values() for d in ds for lab in d}
    order = {lab: i for i, lab in enumerate(space.labels)}
    sites = []
    for (p, side), segs in ref.items():
        ds = deps[(p, side)]
        if not any(ds):
            continue
        out = []
        for (_, n), d in zip(segs, ds):
            labs = tuple(sorted(d, key=order.__getitem__))
            out.append(Segment(n, labs, _unit(space, labs, n)))
        sites.append(ChannelSite(p, side, tuple(out), isinstance(layers[p], nn.Conv2d)))
    return sites, sorted(found, key=order.__getitem__)


def _unit(space: SearchSpace, labels: tuple[str, ...], n: int) -> int:
    """Channels per unit: n / max for one integer label that counts units (heads, 4× FF)."""
    if len(labels) != 1:
        return 1
    opts = space[labels[0]].options
    if not all(isinstance(o, int) for o in opts):
        return 1
    hi = max(opts)
    return n // hi if n % hi == 0 else 1


def soft_probs(options: Sequence[float], value: Tensor) -> Tensor:
    """A continuous value as probabilities over numeric options (linear interpolation
    between its two neighbours); the cost model re-exports it as `soft_choice`."""
    opts = torch.as_tensor([float(o) for o in options], dtype=value.dtype, device=value.device)
    if len(opts) == 1:
        return torch.ones(1, dtype=value.dtype, device=value.device)
    v = value.clamp(opts.min(), opts.max())
    hi = torch.searchsorted(opts, v.detach().reshape(1)).clamp(1, len(opts) - 1)[0]
    lo = hi - 1
    w = (v - opts[lo]) / (opts[hi] - opts[lo])
    p = torch.zeros(len(opts), dtype=value.dtype, device=value.device)
    return p.index_put((lo,), 1 - w).index_put((hi,), w, accumulate=True)


def snap(options: Sequence[Value], value: float) -> Value:
    """The option nearest to `value`; ties go to the larger option."""
    return min(options, key=lambda o: (abs(float(o) - value), -float(o)))


class ChannelMasks(nn.Module):
    """The f_X of every width-like label and the masks (2) of every site.

    `refresh()` recomputes the masks (once per forward); `site_mask(i)` is site i's mask
    (C,), the concatenation of its segments' masks.
    """

    def __init__(
        self, space: SearchSpace, sites: list[ChannelSite], labels: list[str], tau: float = 0.1
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ConfigError(f"PaS mask temperature tau must be > 0, got {tau}")
        self.space = space
        self.sites = list(sites)
        self.labels = list(labels)
        self.tau = float(tau)
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        # f_X = v_X / max_X, one per label (the tied mask parameter), init 1.0: all channels on
        self.frac = nn.Parameter(torch.ones(len(self.labels)))
        lo = [min(space[lab].options) / max(space[lab].options) for lab in self.labels]
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32), persistent=False)
        self._segments = sorted({s for site in self.sites for s in site.segments}, key=repr)
        self._seg_index = {s: i for i, s in enumerate(self._segments)}
        self._masks: list[Tensor] = []

    def values(self) -> dict[str, Tensor]:
        """label → soft value v_X = f_X · max_X (differentiable)."""
        return {
            lab: self.frac[i] * float(max(self.space[lab].options))
            for lab, i in self._index.items()
        }

    def probabilities(self) -> dict[str, Tensor]:
        """label → soft_probs over its options (for `CostModel.expected`)."""
        return {lab: soft_probs(self.space[lab].options, v) for lab, v in self.values().items()}

    def segment_mask(self, seg: Segment) -> Tensor:
        """Eq. (2) for one segment: (length,) exactly binary forward, STE backward."""
        f = torch.ones((), device=self.frac.device, dtype=self.frac.dtype)
        for lab in seg.labels:
            f = f * self.frac[self._index[lab]]
        units = seg.length // seg.unit
        v = f * units  # soft count in units
        u = torch.arange(units, device=f.device, dtype=f.dtype)
        tau = max(self.tau * units, 0.25)
        soft = torch.sigmoid((v - u - 0.5) / tau)  # (units,)
        hard = (soft >= 0.5).to(soft.dtype)
        m = hard + (soft - soft.detach())
        return m.repeat_interleave(seg.unit) if seg.unit > 1 else m

    def refresh(self) -> None:
        segs = [self.segment_mask(s) for s in self._segments]
        self._masks = []
        for site in self.sites:
            parts = [segs[self._seg_index[s]] for s in site.segments]
            self._masks.append(parts[0] if len(parts) == 1 else torch.cat(parts))

    def site_mask(self, i: int) -> Tensor:
        if not self._masks:
            self.refresh()
        return self._masks[i]

    def clear(self) -> None:
        self._masks = []

    @torch.no_grad()
    def project(self) -> None:
        """Keep every f_X in [min_X / max_X, 1] (the range of its options)."""
        self.frac.copy_(self.frac.clamp(max=1.0).maximum(self.lo.to(self.frac.dtype)))

    @torch.no_grad()
    def counts(self) -> dict[str, float]:
        """label → units kept by a mask of that label alone: round(v) for integer labels."""
        out = {}
        for lab, v in self.values().items():
            opts = self.space[lab].options
            val = float(v)
            out[lab] = (
                float(math.floor(val + 0.5)) if all(isinstance(o, int) for o in opts) else val
            )
        return out

    def snapped(self) -> dict[str, Value]:
        """label → the option nearest to its kept count (ties to the larger)."""
        return {lab: snap(self.space[lab].options, c) for lab, c in self.counts().items()}


def apply_mask(x: Tensor, mask: Tensor, conv: bool) -> Tensor:
    """x · mask over the channel dim: dim 1 of (B, C, H, W) for convs, the last dim else."""
    m = mask.to(x.dtype)
    if conv:
        return x * m.view(1, -1, *([1] * (x.dim() - 2)))
    return x * m
