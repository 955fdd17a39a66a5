"""The differentiable one-shot policy: DQSS scheme mixing, PaS width masks, depth gates.

One module owns every architecture parameter of a supernet and installs hooks on its
layers (the elastic layers stay policy-free, as in NNI's split of ops and policies):

- quant labels: logits α (K,) per layer, one convolution over the mixed weight —
  `nas.policies.dqss`, eq. (1) W̃ = Σ_k softmax(α/T)_k Q_k(W);
- width-like labels (stage widths, ResNet inner ratios, heads): a straight-through binary
  prefix mask per label, tied over every tensor of that width — `nas.policies.pas`, eq. (2);
- depth labels: a categorical per label, single-path sampled, residual gates with a
  straight-through gradient — `nas.policies.depth`, eq. (3).

While attached, the supernet runs the `structure_sample` (the base sample with searched
widths at their maximum and the depths of this step) and the hooks do the rest.
`probabilities()` gives per-label probability vectors for `CostModel.expected` (soft widths
through linear interpolation between options) and `discretize()` the searched architecture:
argmax of the quant logits, masks snapped to the nearest option, argmax of the depth
categoricals; valid in the space and extractable with `Supernet.extract`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

from nas.errors import ConfigError
from nas.policies.depth import DepthGates, depth_units, gated
from nas.policies.dqss import QuantStrategyMixing, quant_layers
from nas.policies.pas import ChannelMasks, apply_mask, probe_channel_sites
from nas.spec import Sample

log = logging.getLogger(__name__)

SEARCHABLE = ("quant", "width", "depth")


class DifferentiablePolicy(nn.Module):
    """Architecture parameters of a supernet and the hooks that make them differentiable.

    search: which kinds of labels to search ("quant", "width", "depth"); other labels keep
    their value in `base` (default: the space's max sample). `mix_acts=False` mixes weights
    only (inputs stay float). Temperatures: T of the quant and depth softmaxes; `mask_tau`
    of the PaS masks (a fraction of each dimension's units).
    """

    def __init__(
        self,
        supernet: Any,
        search: Iterable[str] = SEARCHABLE,
        base: Sample | None = None,
        quant_temperature: float = 1.0,
        depth_temperature: float = 1.0,
        mask_tau: float = 0.1,
        mix_acts: bool = True,
    ) -> None:
        super().__init__()
        search = tuple(search)
        unknown = [s for s in search if s not in SEARCHABLE]
        if unknown:
            raise ConfigError(f"cannot search {unknown}; choose among {list(SEARCHABLE)}")
        self.__dict__["supernet"] = supernet  # a plain reference, not a submodule
        space = supernet.space
        self.space = space
        self.search = search
        self.base: Sample = dict(space.validate(base if base is not None else space.max()))
        self.quant: QuantStrategyMixing | None = None
        self.masks: ChannelMasks | None = None
        self.depth: DepthGates | None = None
        if "quant" in search:
            labels = [lab for lab in supernet.quant_paths if len(space[lab]) > 1]
            self.quant = QuantStrategyMixing(
                space, quant_layers(supernet, labels), quant_temperature, mix_acts
            )
        if "width" in search:
            sites, labels = probe_channel_sites(supernet)
            if labels:
                self.masks = ChannelMasks(space, sites, labels, mask_tau)
        if "depth" in search:
            units = [u for u in depth_units(supernet) if len(space[u.label]) > 1]
            if units:
                self.depth = DepthGates(space, units, depth_temperature)
        searched = set(self.labels())
        rest = [
            lab
            for lab in space.labels
            if lab not in searched and len(space[lab]) > 1 and lab not in supernet.quant_paths
        ]
        if rest:
            log.info("labels not searched (kept at the base sample): %s", rest)
        self._handles: list[RemovableHandle] = []
        ref = next(supernet.parameters())
        self.to(ref.device)

    # -- bookkeeping ------------------------------------------------------------------------
    def labels(self) -> list[str]:
        out: list[str] = []
        for part in (self.quant, self.masks, self.depth):
            if part is not None:
                out += part.labels
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # -- hooks ------------------------------------------------------------------------------
    def attach(self) -> DifferentiablePolicy:
        """Install the hooks and register as `supernet.policy` (see `Supernet.arch_parameters`)."""
        net = self.supernet
        other = net.__dict__.get("policy")
        if other is not None and other is not self:
            raise ConfigError("the supernet already has a policy attached; detach() it first")
        if self.attached:
            return self
        net.__dict__["policy"] = self
        self._handles.append(net.register_forward_pre_hook(lambda m, args: self.refresh()))
        if self.masks is not None:
            masks = self.masks
            for i, site in enumerate(masks.sites):
                mod = net.get_submodule(site.path)
                if site.side == "in":
                    self._handles.append(
                        mod.register_forward_pre_hook(_in_hook(masks, i, site.conv))
                    )
                else:
                    self._handles.append(mod.register_forward_hook(_out_hook(masks, i, site.conv)))
        if self.depth is not None:
            gates = self.depth
            for i, unit in enumerate(gates.units):
                mod = net.get_submodule(unit.path)
                self._handles.append(mod.register_forward_hook(_gate_hook(gates, i)))
        return self

    def detach(self) -> None:
        """Remove every hook, clear the layers' mixing state, unregister from the supernet."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for part in (self.quant, self.masks, self.depth):
            if part is not None:
                part.clear()
        if self.supernet.__dict__.get("policy") is self:
            del self.supernet.__dict__["policy"]

    def __enter__(self) -> Self:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def refresh(self) -> None:
        """Recompute probabilities, masks and gates from the current parameters (per forward)."""
        for part in (self.quant, self.masks, self.depth):
            if part is not None:
                part.refresh()

    @torch.no_grad()
    def project(self) -> None:
        """Keep the mask parameters inside their options' range (after each arch step)."""
        if self.masks is not None:
            self.masks.project()

    # -- samples ----------------------------------------------------------------------------
    def structure_sample(self, depths: dict[str, Any] | None = None) -> Sample:
        """What the supernet runs: the base with searched widths at max, `depths` applied."""
        s = dict(self.base)
        if self.masks is not None:
            for lab in self.masks.labels:
                s[lab] = self.space[lab].options[-1]
        s.update(depths or {})
        return s

    def sample_structure(self, generator: torch.Generator | None = None) -> Sample:
        """A structure sample with depths drawn from the depth categoricals (one step's path)."""
        return self.structure_sample(self.depth.sample(generator) if self.depth else None)

    def argmax_structure(self) -> Sample:
        return self.structure_sample(self.depth.argmax() if self.depth else None)

    def probabilities(self) -> dict[str, Tensor]:
        """label → probability vector over its options, for `CostModel.expected`."""
        out: dict[str, Tensor] = {}
        for part in (self.quant, self.masks, self.depth):
            if part is not None:
                out.update(part.probabilities())
        return out

    def discretize(self) -> Sample:
        """The searched architecture: argmax quant, snapped widths, argmax depth (canonical)."""
        s = dict(self.base)
        if self.quant is not None:
            s.update(self.quant.argmax())
        if self.masks is not None:
            s.update(self.masks.snapped())
        if self.depth is not None:
            s.update(self.depth.argmax())
        return self.space.canonical(s)

    @torch.no_grad()
    def summary(self) -> dict[str, list[float]]:
        """label → probabilities as floats (for logs and history)."""
        return {lab: [float(x) for x in p] for lab, p in self.probabilities().items()}


def _in_hook(masks: ChannelMasks, i: int, conv: bool):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (apply_mask(args[0], masks.site_mask(i), conv), *args[1:])

    return hook


def _out_hook(masks: ChannelMasks, i: int, conv: bool):
    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        return apply_mask(out, masks.site_mask(i), conv)

    return hook


def _gate_hook(gates: DepthGates, i: int):
    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        return gated(out, args[0], gates.gate(i))

    return hook
