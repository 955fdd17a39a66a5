"""Differentiable depth: a categorical per depth label, sampled single-path, gated residuals.

Each depth label L (e.g. ``stage.{s}.depth``, ``stage.{s}.attn`` of the U-Net) owns logits
β_L over its options, p = softmax(β_L / T). A step runs ONE depth per label, drawn from p
(the Gumbel-max trick: argmax(β + Gumbel noise) is a sample of softmax(β), GDAS, Dong & Yang,
CVPR 2019; ProxylessNAS' single path, Cai et al., ICLR 2019), or its argmax at evaluation.
The family lists the modules a depth option removes (`Supernet.depth_units()`:
(path, label, v) = "the module runs iff sample[label] ≥ v"); each executed unit's output is
gated straight-through,

    y' = y + (g − sg(g)) · (y − x_skip),     g = P(L ≥ v) = Σ_{o ≥ v} p_o                 (3)

so the forward value is exactly y (the sampled sub-network runs unchanged) and the gradient
is dL/dg = ⟨dL/dy', y − x_skip⟩: "does this block's residual contribution help" — the
derivative of the relaxation x_skip + g · (y − x_skip) at g = 1. x_skip is the unit's input
(its first `out` channels when the input is a concatenation, as in U-Net up blocks: the
skip tensor the block would also consume is ignored in this gradient). Units a sample does
not run give no task gradient in that step; sampling from p lets every option be visited.
The latency term sees p itself (`probabilities`).

We use this single-path straight-through form rather than gating every block of the max
network because removing a U-Net down block also removes a skip and re-routes the up block
(`UpBlock.active_indices`); the supernet's own depth configuration does that routing exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError, InternalError
from nas.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthUnit:
    """A module that runs only when ``sample[label] >= min_value``."""

    path: str
    label: str
    min_value: int


def depth_units(supernet: Any) -> list[DepthUnit]:
    """The family's depth units (`Supernet.depth_units()`), validated against its space."""
    hook = getattr(supernet, "depth_units", None)
    if hook is None:
        raise ConfigError(
            f"{type(supernet).__name__} has no depth_units(); differentiable depth needs the "
            "family to list which modules each depth option removes. Search depth=False, or "
            "add depth_units() to the family's supernet (see MobileUNetSupernet.depth_units)."
        )
    space: SearchSpace = supernet.space
    units = [DepthUnit(*u) for u in hook()]
    for u in units:
        if u.label not in space.labels:
            # The supernet's own hook disagrees with its own space: a bug of the family.
            raise InternalError(
                f"depth unit {u.path!r} names label {u.label!r} unknown to the space"
            )
        supernet.get_submodule(u.path)  # raises AttributeError naming a wrong path
    return units


class DepthGates(nn.Module):
    """Logits of every depth label, their probabilities and the gates (3) of the units."""

    def __init__(
        self, space: SearchSpace, units: Sequence[DepthUnit], temperature: float = 1.0
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"depth temperature must be > 0, got {temperature}")
        self.space = space
        self.units = list(units)
        self.temperature = float(temperature)
        used = {u.label for u in self.units}
        self.labels = [lab for lab in space.labels if lab in used]
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(space[lab]))) for lab in self.labels]
        )
        self._gates: list[Tensor] = []

    def probs(self, label: str) -> Tensor:
        return torch.softmax(self.logits[self._index[label]] / self.temperature, dim=0)

    def probabilities(self) -> dict[str, Tensor]:
        return {lab: self.probs(lab) for lab in self.labels}

    def keep_probability(self, unit: DepthUnit, probs: Tensor | None = None) -> Tensor:
        """g = P(label ≥ v) = Σ_{o ≥ v} p_o (differentiable)."""
        p = self.probs(unit.label) if probs is None else probs
        opts = self.space[unit.label].options
        keep = torch.tensor([float(o >= unit.min_value) for o in opts], device=p.device)
        return (p * keep.to(p.dtype)).sum()

    def refresh(self) -> None:
        probs = self.probabilities()
        self._gates = [self.keep_probability(u, probs[u.label]) for u in self.units]

    def gate(self, i: int) -> Tensor:
        if not self._gates:
            self.refresh()
        return self._gates[i]

    def clear(self) -> None:
        self._gates = []

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> dict[str, Any]:
        """label → an option drawn from p (Gumbel-max ≡ a categorical draw)."""
        out = {}
        for lab in self.labels:
            p = self.probs(lab).detach().float().cpu()
            out[lab] = self.space[lab].options[int(torch.multinomial(p, 1, generator=generator))]
        return out

    @torch.no_grad()
    def argmax(self) -> dict[str, Any]:
        """label → the most probable option (ties: the larger, i.e. the deeper)."""
        out = {}
        for lab in self.labels:
            p = self.probs(lab)
            best = int(torch.nonzero(p == p.max()).max())
            out[lab] = self.space[lab].options[best]
        return out


def gated(y: Tensor, x: Tensor, g: Tensor) -> Tensor:
    """Eq. (3): y + (g − sg(g)) · (y − x_skip), x_skip = x or its first channels (dim 1)."""
    if x.shape != y.shape:
        if x.dim() != y.dim() or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            # x, y are a unit's input and output in a forward hook: the family listed a
            # module that is no residual block in depth_units(); no input causes this.
            raise InternalError(
                f"depth unit input {tuple(x.shape)} and output {tuple(y.shape)} differ beyond "
                "the channel dim; a depth unit must be a residual block"
            )
        x = x.narrow(1, 0, y.shape[1])
    d = (g - g.detach()).to(y.dtype)
    return y + d * (y - x)
