"""DQSS: differentiable search of one quantization strategy per layer, by mixing weights.

Li, Yan & Chen, "Differentiable Search for Finding Optimal Quantization Strategy" (DQSS,
arXiv:2404.08010, 2024), in the mixed-precision DNAS line of Wu et al. 2018 ("Mixed
Precision Quantization of ConvNets via Differentiable Neural Architecture Search", the
FBNet-style relaxation) and Cai & Vasconcelos, CVPR 2020 ("Rethinking Differentiable Search
for Mixed-Precision Neural Networks", EdMIPS: the composite convolution).

Each quant label L (one conv / linear of the supernet) owns logits α_L (K,) over its
candidate schemes; with p = softmax(α_L / T) the layer computes ONE convolution

    W̃ = Σ_k p_k · Q^w_k(W),    x̃ = Σ_k p_k · Q^a_k(x),    y = conv(x̃, W̃)          (1)

(`QuantMixin.mix_weight` / `mix_input`; Q = the fake quantizer of scheme k, fp32 = identity),
so the cost of a step is one convolution plus K cheap elementwise quantizations instead of K
convolutions. Weights, quantizer parameters and logits are updated in the same
forward/backward pass (as DQSS does for QAT).

What (1) equals. A convolution is bilinear, so (1) is
Σ_k Σ_l p_k p_l · conv(Q^a_l(x), Q^w_k(W)): EdMIPS' product mixture over (weight quantizer,
activation quantizer) pairs, cross pairs k ≠ l included. It equals the K-path mixture
Σ_k p_k · conv(Q^a_k(x), Q^w_k(W)) only when the activation side is shared by all
candidates: with ``mix_acts=False`` (inputs stay float) or one common activation quantizer,
(1) is exactly Σ_k p_k · conv(x, Q^w_k(W)) up to float rounding (tested; `k_path_forward`
is that reference and `bench/oneshot_mixing.py` times both).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError, InternalError
from nas.quant.fake import fake_quant_act, fake_quant_weight
from nas.quant.layers import QuantMixin
from nas.quant.scheme import QuantScheme
from nas.space import SearchSpace

log = logging.getLogger(__name__)


class QuantStrategyMixing(nn.Module):
    """Logits over the candidate schemes of every searched quant label, pushed into layers.

    Labels with the same option list share one (labels, K) logits matrix, so one softmax
    per forward gives every layer its probabilities. `refresh()` sets each layer's
    `quant_mix` (probabilities in the layer's candidate order).
    """

    def __init__(
        self,
        space: SearchSpace,
        layers: dict[str, QuantMixin],
        temperature: float = 1.0,
        mix_acts: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"DQSS temperature must be > 0, got {temperature}")
        self.space = space
        self.temperature = float(temperature)
        self.mix_acts = bool(mix_acts)
        self.labels = list(layers)
        self._layers = dict(layers)  # label → layer (plain dict: not submodules of the policy)
        groups: dict[tuple, list[str]] = {}
        for lab in self.labels:
            groups.setdefault(tuple(space[lab].options), []).append(lab)
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(labs), len(opts))) for opts, labs in groups.items()]
        )
        # label → (group, row, permutation from option order to the layer's candidate order)
        self._where: dict[str, tuple[int, int, Tensor | None]] = {}
        for g, (opts, labs) in enumerate(groups.items()):
            for r, lab in enumerate(labs):
                self._where[lab] = (g, r, _candidate_perm(lab, opts, self._layers[lab]))
        self._probs: list[Tensor] = []

    def probs_matrix(self, g: int) -> Tensor:
        return torch.softmax(self.logits[g] / self.temperature, dim=-1)  # (labels_g, K)

    def probabilities(self) -> dict[str, Tensor]:
        """label → p (K,) in option order (differentiable)."""
        mats = [self.probs_matrix(g) for g in range(len(self.logits))]
        return {lab: mats[g][r] for lab, (g, r, _) in self._where.items()}

    def refresh(self) -> None:
        """Recompute p and hand each layer its row (one softmax per option group)."""
        self._probs = [self.probs_matrix(g) for g in range(len(self.logits))]
        for lab, (g, r, perm) in self._where.items():
            p = self._probs[g][r]
            layer = self._layers[lab]
            layer.quant_mix = p if perm is None else p.index_select(0, perm.to(p.device))
            layer.quant_mix_acts = self.mix_acts

    def clear(self) -> None:
        for layer in self._layers.values():
            layer.quant_mix = None
            layer.quant_mix_acts = True
        self._probs = []

    @torch.no_grad()
    def argmax(self) -> dict[str, str]:
        """label → the option of largest logit (ties: the last, i.e. the most precise)."""
        out = {}
        for lab, (g, r, _) in self._where.items():
            row = self.logits[g][r]
            out[lab] = self.space[lab].options[int(torch.nonzero(row == row.max()).max())]
        return out


def _candidate_perm(label: str, options: Sequence, layer: QuantMixin) -> Tensor | None:
    """Index tensor mapping option-order probabilities to the layer's candidate order."""
    schemes = [QuantScheme.parse(str(o)) for o in options]
    cands = list(layer.quant_candidates)
    if sorted(map(str, schemes)) != sorted(map(str, cands)):
        raise ConfigError(
            f"quant label {label!r} has options {[str(s) for s in schemes]} but its layer was "
            f"built for {[str(s) for s in cands]}; build the layer with "
            "init_quant(<the label's options>)"
        )
    perm = [schemes.index(c) for c in cands]
    return None if perm == list(range(len(perm))) else torch.tensor(perm)


def quantizer_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The learned quantizer parameters (``wq_<method>`` / ``aq_<method>``) of `module`."""
    return [
        p
        for name, p in module.named_parameters()
        if name.rsplit(".", 1)[-1].startswith(("wq_", "aq_"))
    ]


def k_path_forward(layer: QuantMixin, x: Tensor, probs: Tensor, acts: bool = False) -> Tensor:
    """Reference: Σ_k p_k · layer_k(x) with K separate convolutions / linears.

    layer_k runs candidate k on weights (and on inputs when `acts`); the elastic slicing of
    the layer is ignored (pass an unconfigured layer). This is what the one-convolution
    mixing (1) replaces; equal to it when `acts` is False and the layer mixes weights only.
    """
    out: Tensor | None = None
    w = layer.weight  # type: ignore[attr-defined]
    for k, scheme in enumerate(layer.quant_candidates):
        wk = fake_quant_weight(w, scheme, layer._learned("wq", scheme, w.shape[0]))
        xk = fake_quant_act(x, scheme, layer._learned("aq", scheme)) if acts else x
        if isinstance(layer, nn.Conv2d):
            yk = layer._conv_forward(xk, wk, layer.bias)
        else:
            yk = F.linear(xk, wk, layer.bias)  # type: ignore[attr-defined]
        out = probs[k] * yk if out is None else out + probs[k] * yk
    if out is None:
        raise ConfigError("k_path_forward needs a layer with candidate schemes")
    return out


def product_mixture_forward(layer: QuantMixin, x: Tensor, probs: Tensor) -> Tensor:
    """Reference: Σ_k Σ_l p_k p_l · layer(Q^a_l(x), Q^w_k(W)), K² convolutions.

    What the one-convolution mixing (1) equals when activations are mixed too (bilinearity).
    """
    w = layer.weight  # type: ignore[attr-defined]
    ws = [
        fake_quant_weight(w, s, layer._learned("wq", s, w.shape[0])) for s in layer.quant_candidates
    ]
    xs = [fake_quant_act(x, s, layer._learned("aq", s)) for s in layer.quant_candidates]
    out: Tensor | None = None
    for k, wk in enumerate(ws):
        for j, xj in enumerate(xs):
            if isinstance(layer, nn.Conv2d):
                y = layer._conv_forward(xj, wk, layer.bias)
            else:
                y = F.linear(xj, wk, layer.bias)  # type: ignore[attr-defined]
            term = probs[k] * probs[j] * y
            out = term if out is None else out + term
    if out is None:
        raise ConfigError("product_mixture_forward needs a layer with candidate schemes")
    return out


def quant_layers(supernet: nn.Module, labels: Iterable[str]) -> dict[str, QuantMixin]:
    """label → the supernet layer it quantizes (via `Supernet.quant_paths`)."""
    paths: dict[str, str] = getattr(supernet, "quant_paths", {})
    out = {}
    for lab in labels:
        if lab not in paths:
            raise ConfigError(
                f"quant label {lab!r} names no layer of the supernet (Supernet.quant_paths)"
            )
        layer = supernet.get_submodule(paths[lab])
        if not isinstance(layer, QuantMixin):
            # The supernet's own quant_paths point at a plain layer: a bug of the family.
            raise InternalError(f"{paths[lab]!r} (label {lab!r}) is not a quant-aware layer")
        out[lab] = layer
    return out
