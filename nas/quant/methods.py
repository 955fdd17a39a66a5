"""Fake-quant handlers, one registered per method name.

Every handler simulates integer quantization in floating point with a
straight-through estimator (STE, Bengio et al. 2013): the forward pass rounds,
the backward pass treats rounding as identity, so gradients reach the weights
(and the learned quantizer parameters of LSQ and PACT).

Weights are quantized per output channel (dim 0) or per tensor; activations
per tensor. Grids are symmetric: uniform ones are q = clamp(round(x / s), -Q, Q) · s
with Q = 2^(b-1) - 1 (minmax, percentile, mse, lsq, pact); non-uniform ones
(pot, sp2) pick among 2^(b-1) - 1 signed magnitudes and 0. Either way at most
2^b - 1 distinct values per channel (or tensor).

Methods are registered as instances (`@register(name)` on the class), so
``METHODS.get(name).weight(...)`` works directly.

Learned parameters are stored as log-multipliers `p` on a data-derived
statistic (s = s0(x).detach() · exp(p)), initialised at 0: a freshly created
layer is therefore correctly initialised whatever its weights, and a learned
parameter has one meaning whatever the bit width.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from nas.registry import Registry

logger = logging.getLogger(__name__)

METHODS: Registry[QuantMethod] = Registry("quant method")


def register(name: str) -> Callable[[type[QuantMethod]], type[QuantMethod]]:
    """Class decorator: register one *instance* of a `QuantMethod` under `name`."""

    def deco(cls: type[QuantMethod]) -> type[QuantMethod]:
        METHODS.add(name, cls())
        return cls

    return deco


def ste_round(x: Tensor) -> Tensor:
    """round() forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def absmax(x: Tensor, per_channel: bool) -> Tensor:
    """max |x| per output channel (shape (C, 1, ...)) or per tensor (scalar); never 0."""
    if per_channel:
        m = x.detach().abs().flatten(1).amax(dim=1)
        m = m.view(-1, *([1] * (x.dim() - 1)))
    else:
        m = x.detach().abs().amax()
    return m.clamp_min(1e-8)


def uniform(x: Tensor, clip: Tensor, bits: int) -> Tensor:
    """Symmetric uniform fake-quant of x with clipping range `clip` (broadcastable)."""
    q = qmax(bits)
    scale = clip / q
    return torch.clamp(ste_round(x / scale), -q, q) * scale


def channel_shape(x: Tensor, per_channel: bool) -> tuple[int, ...]:
    """Shape of a per-channel (or per-tensor) statistic that broadcasts against x."""
    return (x.shape[0], *([1] * (x.dim() - 1))) if per_channel else ()


class QuantMethod(ABC):
    """One way of choosing a quantization grid.

    `learns_weight` / `learns_act` say whether the method has a learned
    parameter for weights (shape (C,) per channel, (1,) per tensor) or for
    activations (shape (1,)); the layer owns those parameters and passes them
    in as `learned`.
    """

    learns_weight: bool = False
    learns_act: bool = False

    @abstractmethod
    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        """Fake-quantized copy of a weight tensor (dim 0 = output channels)."""

    def act(self, x: Tensor, bits: int, learned: Tensor | None) -> Tensor:
        """Fake-quantized copy of an activation tensor (per tensor)."""
        return self.weight(x.reshape(1, -1), bits, False, learned).reshape(x.shape)


@register("minmax")
class MinMax(QuantMethod):
    """Clip at max |x|: the simplest calibration."""

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        return uniform(w, absmax(w, per_channel), bits)


# --------------------------------------------------------------------------- helpers


def _per_group(x: Tensor, per_channel: bool) -> Tensor:
    """x as (G, N): one row per output channel (G = C) or one row for the tensor (G = 1)."""
    return x.flatten(1) if per_channel else x.reshape(1, -1)


def _as_stat(v: Tensor, x: Tensor, per_channel: bool) -> Tensor:
    """A (G,) statistic reshaped to broadcast against x: (C, 1, ...) or a scalar."""
    return v.view(channel_shape(x, per_channel)) if per_channel else v.reshape(())


def _multiplier(
    learned: Tensor | None, x: Tensor, per_channel: bool, grad_scale: float = 1.0
) -> Tensor:
    """exp(p) for a log-multiplier p of shape (C,) or (1,); 1 when no parameter is given.

    `grad_scale` multiplies the gradient reaching p but not its value
    (the ``p*g - (p*g).detach() + p.detach()`` trick).
    """
    if learned is None:
        return torch.ones((), dtype=x.dtype, device=x.device)
    p = learned
    if grad_scale != 1.0:
        p = p * grad_scale - (p * grad_scale).detach() + p.detach()
    return torch.exp(_as_stat(p, x, per_channel)).to(x.dtype)


def _quantize(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """clamp(round(x / s), -Q, Q) · s with STE on round; gradients reach x and s."""
    q = qmax(bits)
    return torch.clamp(ste_round(x / scale), -q, q) * scale


def _nearest_level(x: Tensor, alpha: Tensor, levels: Tensor) -> Tensor:
    """sign(x) · α · the level nearest to |x|/α (linear domain), STE in x.

    levels: sorted 1-D magnitudes in [0, 1] with levels[0] = 0 and levels[-1] = 1;
    nearest level = bucketize on the midpoints between consecutive levels.
    """
    levels = levels.to(device=x.device, dtype=x.dtype)
    xd = x.detach()
    mids = (levels[1:] + levels[:-1]) / 2
    idx = torch.bucketize((xd.abs() / alpha).contiguous(), mids)
    q = torch.sign(xd) * levels[idx] * alpha
    # Exact STE: forward value is q bit for bit, gradient w.r.t. x is identity.
    return x - xd + q


# --------------------------------------------------------------------------- calibrated clipping


@register("percentile")
class Percentile(QuantMethod):
    """Percentile clipping (e.g. Wu et al. 2020, "Integer Quantization for Deep
    Learning Inference"): clip = P99.9(|x|) per channel / per tensor, then the
    symmetric uniform grid q = clamp(round(x/s), -Q, Q)·s with s = clip/Q.

    The percentile is the k-th smallest |x| with k = ceil(0.999·N) (torch.kthvalue;
    torch.quantile refuses inputs above 16M elements). Rows of fewer than 1000
    elements (e.g. per-channel 3x3 kernels) get k = N, i.e. minmax.
    """

    q: float = 0.999

    def clip(self, x: Tensor, per_channel: bool) -> Tensor:
        a = _per_group(x.detach().abs(), per_channel)  # (G, N)
        k = min(a.shape[1], max(1, math.ceil(self.q * a.shape[1])))
        v = torch.kthvalue(a, k, dim=1).values  # (G,)
        return _as_stat(v, x, per_channel).clamp_min(1e-8)

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        return uniform(w, self.clip(w, per_channel), bits)


@register("mse")
class MSEClip(QuantMethod):
    """MSE-optimal clipping (e.g. Banner et al. 2019 / Sung et al. 2015):
    clip* = argmin_{r ∈ grid} Σ (Q_r(x) - x)²,  Q_r = uniform grid with clip r·max|x|,
    chosen per channel (or per tensor). The grid runs from 1.0 down to 0.3 in 24
    steps; r = 1.0 wins ties, so the result is never worse than minmax. The
    search is detached; the final quantization uses the STE.
    """

    ratios: tuple[float, ...] = tuple(1.0 - 0.7 * i / 23 for i in range(24))

    @torch.no_grad()
    def clip(self, x: Tensor, bits: int, per_channel: bool) -> Tensor:
        x = x.detach()
        amax = absmax(x, per_channel)
        best_clip = amax
        best_err: Tensor | None = None
        for r in self.ratios:  # loop over the grid only; vectorized over channels
            c = amax * r
            err = _per_group((uniform(x, c, bits) - x).square(), per_channel).sum(dim=1)
            err = _as_stat(err, x, per_channel)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_clip = torch.where(better, c, best_clip)
        return best_clip

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        return uniform(w, self.clip(w, bits, per_channel), bits)


# --------------------------------------------------------------------------- learned quantizers


@register("lsq")
class LSQ(QuantMethod):
    """Learned Step Size Quantization (Esser et al., ICLR 2020):
    q = clamp(round(x/s), -Q, Q)·s with STE on round, step s learned.

    Here s = s0 · exp(p) with p the layer's log-multiplier (init 0) and
    s0 = min(2·mean|x| / sqrt(Q), max|x| / Q), detached, per channel / per tensor:
    the paper's init, capped so the grid never reaches past the data. The cap
    matters at high bits only: uncapped, 8 bits would start with a clip range
    of 2·sqrt(127)·mean|x| ≈ 18σ and a step several times coarser than minmax's.
    The gradient reaching p is scaled by LSQ's g = 1/sqrt(N·Q) (N = elements
    per step), so the step learns at a similar rate whatever the layer size.
    Gradient w.r.t. s is the paper's: -x/s + round(x/s) inside, ±Q outside.
    """

    learns_weight = True
    learns_act = True

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        q = qmax(bits)
        a = _per_group(w.detach().abs(), per_channel)  # (G, N)
        s0 = torch.minimum(2 * a.mean(dim=1) / math.sqrt(q), a.amax(dim=1) / q)  # (G,)
        s0 = _as_stat(s0, w, per_channel).clamp_min(1e-8)
        g = 1.0 / math.sqrt(a.shape[1] * q)
        return _quantize(w, s0 * _multiplier(learned, w, per_channel, g), bits)


@register("pact")
class PACT(QuantMethod):
    """PACT (Choi et al. 2018), symmetric: y = clip(x, -α, α),
    q = round(y·Q/α)·α/Q with STE on round, α learned.

    Here α = max|x| (detached) · exp(p), so a fresh layer starts at minmax.
    Clipping is min(max(x, -α), α): the gradient to α is sign(x) where |x| > α
    (the PACT term), plus the rounding residual (round(y/s) - y/s)/Q inside the
    range (scale s = α/Q is differentiable too); x gets a gradient only inside.
    """

    learns_weight = True
    learns_act = True

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        alpha = absmax(w, per_channel) * _multiplier(learned, w, per_channel)
        y = torch.minimum(torch.maximum(w, -alpha), alpha)
        return _quantize(y, alpha / qmax(bits), bits)


# --------------------------------------------------------------------------- non-uniform grids


@cache
def pot_levels(bits: int) -> Tensor:
    """{0} ∪ {2^-j : j = 0 .. 2^(b-1)-2}, sorted; 2^(b-1) magnitudes → 2^b - 1 signed values."""
    top = 2 ** (bits - 1) - 2
    return torch.tensor([0.0] + [2.0**-j for j in range(top, -1, -1)], dtype=torch.float64)


@cache
def sp2_levels(bits: int) -> Tensor:
    """{p1 + p2} / max with p1 ∈ {0} ∪ {2^-2i}, p2 ∈ {0} ∪ {2^-(2i+1)}.

    The b-1 magnitude bits are split ceil/floor between p1 and p2 (2^m values
    each, 0 included). Even and odd powers never collide, so the sums are
    distinct: 2^(b-1) magnitudes, 2^b - 1 signed values.
    """
    m = bits - 1
    m1, m2 = (m + 1) // 2, m // 2
    p1 = [0.0] + [2.0 ** (-2 * i) for i in range(2**m1 - 1)]
    p2 = [0.0] + [2.0 ** (-(2 * i + 1)) for i in range(2**m2 - 1)]
    sums = torch.tensor(sorted({a + b for a in p1 for b in p2}), dtype=torch.float64)
    return sums / sums.max()


@register("pot")
class PowerOfTwo(QuantMethod):
    """Power-of-two (logarithmic) quantization (Miyashita et al. 2016):
    q = sign(x) · α · 2^-j,  j ∈ {0 .. 2^(b-1)-2}, or 0;  α = max|x| per channel / tensor.

    The level is the nearest one in the linear domain (midpoints between
    consecutive levels, torch.bucketize), i.e. the minimum-|q - x| choice;
    STE for the gradient. At most 2^b - 1 distinct values.
    """

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        return _nearest_level(w, absmax(w, per_channel), pot_levels(bits))


@register("sp2")
class SumOfPowersOfTwo(QuantMethod):
    """Additive powers-of-two (APoT, Li et al., ICLR 2020), two terms:
    q = sign(x) · α · (p1 + p2) / max(p1 + p2),
    p1 ∈ {0} ∪ {2^-2i},  p2 ∈ {0} ∪ {2^-(2i+1)},  α = max|x| per channel / tensor.
    Nearest level in the linear domain via torch.bucketize on midpoints; STE for
    the gradient. At most 2^b - 1 distinct values.
    """

    def weight(self, w: Tensor, bits: int, per_channel: bool, learned: Tensor | None) -> Tensor:
        return _nearest_level(w, absmax(w, per_channel), sp2_levels(bits))
