"""Quantization-aware layers: weights and input activations fake-quantized by a scheme.

`QuantMixin` is shared by the standalone layers here (`QuantConv2d`,
`QuantLinear`, what an exported model is built of) and by the elastic
supernet layers in `nas.elastic`, so an extracted model quantizes exactly as
the supernet did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quant.fake import fake_quant_act, fake_quant_weight
from nas.quant.methods import METHODS
from nas.quant.scheme import QuantScheme


class QuantMixin:
    """Holds the active scheme and the learned quantizer parameters of one layer.

    Learned parameters exist for every learned method among the layer's
    candidate schemes: ``wq_<method>`` with one entry per (max) output channel
    and ``aq_<method>`` with one entry for the input activation.

    Mixing mode (DQSS, `nas.policies.dqss`): when `quant_mix` holds probabilities
    p (K,) over `quant_candidates`, the layer runs the mixed weight
    W̃ = Σ_k p_k Q^w_k(W) and, if `quant_mix_acts`, the mixed input
    x̃ = Σ_k p_k Q^a_k(x) (float input otherwise) instead of its active scheme, so
    the caller still does ONE convolution / linear over (x̃, W̃).
    """

    quant: QuantScheme | None
    quant_enabled: bool
    quant_mix: Tensor | None = None
    quant_mix_acts: bool = True

    def init_quant(self, schemes: Iterable[QuantScheme | str], out_features: int) -> None:
        schemes = [QuantScheme.parse(s) for s in schemes]
        self.quant = None
        self.quant_enabled = True
        self.quant_candidates = tuple(dict.fromkeys(schemes))
        for name in sorted({s.method for s in schemes if not s.is_float}):
            method = METHODS.get(name)
            if method.learns_weight and any(
                s.quantizes_weights for s in schemes if s.method == name
            ):
                self.register_parameter(f"wq_{name}", nn.Parameter(torch.zeros(out_features)))
            if method.learns_act and any(s.quantizes_acts for s in schemes if s.method == name):
                self.register_parameter(f"aq_{name}", nn.Parameter(torch.zeros(1)))

    def _learned(self, prefix: str, scheme: QuantScheme, n: int | None = None) -> Tensor | None:
        method = METHODS.get(scheme.method)
        if prefix == "wq":
            wanted = method.learns_weight and scheme.quantizes_weights
        else:
            wanted = method.learns_act and scheme.quantizes_acts
        if not wanted:  # float side of a weight-only scheme, or a method without parameters
            return None
        p = getattr(self, f"{prefix}_{scheme.method}", None)
        if p is None:
            raise ConfigError(
                f"layer {type(self).__name__} has no learned '{scheme.method}' parameters; "
                f"it was built for schemes {[str(s) for s in self.quant_candidates]}. "
                "Add the scheme to the layer's candidates (the space's quant options)."
            )
        if prefix == "wq" and scheme.granularity == "tensor":
            return p[:1]
        return p if n is None else p[:n]

    def active_scheme(self) -> QuantScheme | None:
        return self.quant if self.quant_enabled else None

    def qweight(self, w: Tensor) -> Tensor:
        if self.quant_mix is not None and self.quant_enabled:
            return self.mix_weight(w, self.quant_mix)
        scheme = self.active_scheme()
        if scheme is None:
            return w
        return fake_quant_weight(w, scheme, self._learned("wq", scheme, w.shape[0]))

    def qinput(self, x: Tensor) -> Tensor:
        if self.quant_mix is not None and self.quant_enabled:
            return self.mix_input(x, self.quant_mix) if self.quant_mix_acts else x
        scheme = self.active_scheme()
        if scheme is None:
            return x
        return fake_quant_act(x, scheme, self._learned("aq", scheme))

    def mix_weight(self, w: Tensor, probs: Tensor) -> Tensor:
        """W̃ = Σ_k p_k Q^w_k(W); schemes with the same weight quantizer are computed once."""
        out: Tensor | None = None
        for scheme, idx in _mix_groups(self.quant_candidates, "w"):
            q = fake_quant_weight(w, scheme, self._learned("wq", scheme, w.shape[0]))
            term = _mass(probs, idx) * q
            out = term if out is None else out + term
        return w if out is None else out

    def mix_input(self, x: Tensor, probs: Tensor) -> Tensor:
        """x̃ = Σ_k p_k Q^a_k(x); schemes with the same activation quantizer are computed once."""
        out: Tensor | None = None
        for scheme, idx in _mix_groups(self.quant_candidates, "a"):
            q = fake_quant_act(x, scheme, self._learned("aq", scheme))
            term = _mass(probs, idx) * q
            out = term if out is None else out + term
        return x if out is None else out


def _mass(probs: Tensor, idx: list[int]) -> Tensor:
    """Probability mass () of the candidates `idx` (one quantizer shared by several schemes)."""
    return probs[idx[0]] if len(idx) == 1 else probs[idx].sum()


@cache
def _mix_groups(
    candidates: tuple[QuantScheme, ...], side: str
) -> tuple[tuple[QuantScheme, list[int]], ...]:
    """Candidates grouped by the quantizer they apply to weights (side "w") or inputs ("a").

    E.g. w4a8:lsq and w8a8:lsq share the 8-bit LSQ input quantizer; fp16 and w4a16:minmax
    share the fp16 input round trip. Returns (representative scheme, candidate indices).
    """
    groups: dict[tuple, list[int]] = {}
    reps: dict[tuple, QuantScheme] = {}
    for i, s in enumerate(candidates):
        if side == "w":
            key = (s.w_bits, s.method, s.granularity) if s.quantizes_weights else (s.w_bits,)
        else:
            key = (s.a_bits, s.method) if s.quantizes_acts else (s.a_bits,)
        groups.setdefault(key, []).append(i)
        reps.setdefault(key, s)
    return tuple((reps[k], idx) for k, idx in groups.items())


QuantArg = QuantScheme | str | Sequence[QuantScheme | str] | None


def _candidates(quant: QuantArg) -> tuple[list[QuantScheme | str], QuantScheme | None]:
    """A layer's candidate schemes and its initial active scheme.

    One scheme: the layer runs it. A sequence: the layer can run any of them
    (a supernet layer); it runs float until one is activated.
    """
    if quant is None:
        return [], None
    if isinstance(quant, (str, QuantScheme)):
        scheme = QuantScheme.parse(quant)
        return [scheme], scheme
    return list(quant), None


class QuantConv2d(nn.Conv2d, QuantMixin):
    """`nn.Conv2d` whose weights and input are fake-quantized by `quant`."""

    def __init__(self, *args, quant: QuantArg = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        candidates, self_quant = _candidates(quant)
        self.init_quant(candidates, self.out_channels)
        self.quant = self_quant

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.qinput(x), self.qweight(self.weight), self.bias)


class QuantLinear(nn.Linear, QuantMixin):
    """`nn.Linear` whose weights and input are fake-quantized by `quant`."""

    def __init__(self, *args, quant: QuantArg = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        candidates, self_quant = _candidates(quant)
        self.init_quant(candidates, self.out_features)
        self.quant = self_quant

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.qinput(x), self.qweight(self.weight), self.bias)


def set_quant_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch fake quantization on or off in every quant-aware layer of `model`."""
    for m in model.modules():
        if isinstance(m, QuantMixin):
            m.quant_enabled = enabled


def quant_plan(model: nn.Module) -> dict[str, str]:
    """module path → scheme name for every quant-aware layer with a scheme."""
    return {
        name: str(m.quant)
        for name, m in model.named_modules()
        if isinstance(m, QuantMixin) and m.quant is not None
    }
