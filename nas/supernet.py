"""Weight-sharing supernets and the registry of search spaces.

A `Supernet` owns the largest weights of a space. `activate(sample)` runs one
sub-network (once-for-all style slicing); `extract(sample)` returns that
sub-network as a standalone diffusers model with copied weights. Families
(`search_spaces/`) register named spaces here; `nas` never imports them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.errors import InternalError
from nas.quant.layers import QuantMixin
from nas.quant.scheme import QuantScheme
from nas.registry import Registry
from nas.space import SearchSpace
from nas.spec import Sample

log = logging.getLogger(__name__)

QUANT_SUFFIX = ".quant"


class Supernet(nn.Module, ABC):
    """Base of every family's supernet.

    Subclasses build their modules at the maximum architecture and implement
    `_configure(sample)` (set active widths / heads / depth on their modules)
    and `standalone_config(sample)` (constructor kwargs of `standalone_cls`).
    `quant_paths` maps every ``*.quant`` label of the space to the module path
    of the layer it quantizes.
    """

    standalone_cls: type[nn.Module]

    def __init__(self, space: SearchSpace, quant_paths: dict[str, str]) -> None:
        super().__init__()
        self.space = space
        self.quant_paths = dict(quant_paths)
        self._active: Sample | None = None
        unknown = [lab for lab in self.quant_paths if lab not in space.labels]
        if unknown:
            # A family's constructor passes both: a mismatch is a bug of the family.
            raise InternalError(
                f"quant labels {unknown[:3]} are not labels of space {space.name!r}"
            )

    # -- activation ---------------------------------------------------------------------
    @abstractmethod
    def _configure(self, sample: Sample) -> None:
        """Set the active widths, heads and depth of every module for `sample`."""

    @abstractmethod
    def standalone_config(self, sample: Sample) -> dict[str, Any]:
        """Constructor arguments of the standalone model of `sample`."""

    @abstractmethod
    def example_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        """Keyword inputs of one forward pass (the supernet's and the standalone model's)."""

    def _set(self, sample: Sample | None) -> None:
        if sample is None:
            for m in self.modules():
                if hasattr(m, "reset_active") and m is not self:
                    m.reset_active()
            self._reset_depth()
        else:
            self._configure(sample)
            for label, path in self.quant_paths.items():
                layer = self.get_submodule(path)
                layer.quant = QuantScheme.parse(sample[label])  # type: ignore[assignment]
        self._active = sample

    def _reset_depth(self) -> None:
        """Restore the maximum depth; families with elastic depth override this."""

    @property
    def active_sample(self) -> Sample | None:
        return self._active

    @contextmanager
    def activate(self, sample: Sample) -> Iterator[Supernet]:
        """Run the sub-network of `sample` inside the block; restore the previous one after."""
        s = self.space.canonical(sample)
        prev = self._active
        self._set(s)
        try:
            yield self
        finally:
            self._set(prev)

    def quant_plan(self, sample: Sample) -> dict[str, str]:
        """Standalone module path → scheme name of every layer `sample` keeps."""
        return {layer.path: str(layer.quant) for layer in self.space.freeze(sample).layers}

    # -- extraction ---------------------------------------------------------------------
    def extract(self, sample: Sample) -> nn.Module:
        """The standalone model of `sample`, weights copied from the supernet."""
        s = self.space.canonical(sample)
        model = self.standalone_cls(**self.standalone_config(s))
        ref = next(self.parameters())
        # diffusers' ModelMixin.to warns whenever a dtype is passed: pass it only if needed.
        model.to(ref.device)
        if next(model.parameters()).dtype != ref.dtype:
            model.to(dtype=ref.dtype)
        with self.activate(s):
            copy_active_weights(self, model)
        enabled = {m.quant_enabled for m in self.modules() if isinstance(m, QuantMixin)}
        for m in model.modules():
            if isinstance(m, QuantMixin):
                m.quant_enabled = enabled != {False}
        model.eval() if not self.training else model.train()
        return model

    def source_path(self, path: str) -> str:
        """The supernet module whose active slice fills standalone module `path`.

        Identity by default; a family whose depth removes blocks from the middle
        of a sequence (not only its end) maps the standalone indices here.
        """
        return path

    # -- parameters ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """Architecture parameters of the attached differentiable policy (none for single-path).

        A policy (`nas.policies.DifferentiablePolicy`) attaches itself as the plain attribute
        `policy` (not a submodule: its parameters stay out of `parameters()` and the state dict).
        """
        policy = self.__dict__.get("policy")
        return [] if policy is None else list(policy.arch_parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]


def copy_active_weights(supernet: nn.Module, model: nn.Module) -> None:
    """Copy the active slices of `supernet` into `model`, module path by module path.

    A module of the supernet that defines `sliced_state()` gives its active
    slices; any other gives its parameters and buffers as they are. Names and
    shapes must agree, else `InternalError` names the parameter: the model comes from the
    family's own `standalone_config`, so a mismatch is a bug of the family, not of a sample.
    """
    for path, dst in model.named_modules():
        own = dict(dst.named_parameters(recurse=False))
        own.update(
            (n, b)
            for n, b in dst.named_buffers(recurse=False)
            if n not in dst._non_persistent_buffers_set
        )
        if not own:
            continue
        try:
            src_path = supernet.source_path(path) if isinstance(supernet, Supernet) else path
            src = supernet.get_submodule(src_path)
        except AttributeError:
            raise InternalError(
                f"supernet has no module {path!r} that the standalone model has"
            ) from None
        if hasattr(src, "sliced_state"):
            state = src.sliced_state()
        else:
            state = dict(src.named_parameters(recurse=False))
            state.update(src.named_buffers(recurse=False))
        for name, t in own.items():
            if name not in state:
                raise InternalError(f"supernet module {path!r} has no parameter {name!r}")
            v = state[name]
            if tuple(v.shape) != tuple(t.shape):
                raise InternalError(
                    f"{path}.{name}: supernet slice has shape {tuple(v.shape)}, standalone "
                    f"model expects {tuple(t.shape)}"
                )
            with torch.no_grad():
                t.copy_(v)


# -- the registry of named spaces ---------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A space family (the package `search_spaces/<family>/`): how to build its space and supernet."""

    name: str
    make_space: Callable[[Any, str], SearchSpace]
    make_supernet: Callable[[Any, SearchSpace], Supernet]
    standalone_cls: type[nn.Module]
    # (block kind, block dims, batch) → (float module of that block at those dims, example
    # inputs): the micro-model a latency backend times for one table key.
    block_model: (
        Callable[[str, dict[str, Any], int], tuple[nn.Module, tuple[torch.Tensor, ...]]] | None
    ) = None
    # (config, space, sample, batch) → (float standalone model of the sample wrapped to take
    # positional tensors and return a tensor, example inputs): what end-to-end runs time,
    # built without the supernet (an SD-sized supernet need not fit in memory).
    standalone_model: (
        Callable[
            [Any, SearchSpace, dict[str, Any], int], tuple[nn.Module, tuple[torch.Tensor, ...]]
        ]
        | None
    ) = None


@dataclass(frozen=True)
class SpaceEntry:
    """A registered space: a family and the frozen config of one instance of it."""

    name: str
    family: Family
    config: Any

    def space(self) -> SearchSpace:
        return self.family.make_space(self.config, self.name)

    def supernet(self, device: str | torch.device | None = None) -> Supernet:
        net = self.family.make_supernet(self.config, self.space())
        return net.to(device) if device is not None else net


SPACES: Registry[SpaceEntry] = Registry("search space")


def register_space(name: str, family: Family, config: Any) -> SpaceEntry:
    entry = SpaceEntry(name, family, config)
    SPACES.add(name, entry)
    return entry


def get_space(name: str) -> SpaceEntry:
    """A registered space by name (`import search_spaces` registers the shipped ones)."""
    return SPACES.get(name)
