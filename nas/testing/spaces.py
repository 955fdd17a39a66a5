"""Conformance tests for a registered search space and its supernet, as pytest base classes.

    from nas.testing.spaces import SupernetConformance

    class TestMySpace(SupernetConformance):
        space_name = "my_space"  # registered with nas.register_space(name, family, config)

`SpaceConformance` checks the space alone and builds no model, so it suits spaces too
large for a CPU test: samples validate and canonicalize idempotently, every sample freezes
to an `ArchSpec` that lists blocks and layers and survives JSON, and `space.max()` holds
more weights than `space.min()`. `SupernetConformance` adds the supernet: the model
`extract` returns computes what the activated supernet computes (float and fake-quant, for
min, max and random samples), activation is undone on exit, foreign samples are refused,
and `nas.export` → `load_exported` (and the model class's own `from_pretrained`) gives the
same model back.

To test several registered spaces with one class, set ``entry =
registered_entries(names)``; a space that is not registered overrides the class-scoped
``entry`` fixture (it returns a `SpaceEntry`). A model whose
output is not a diffusers output (``.sample``) or a tuple overrides `output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from nas.errors import InvalidSampleError
from nas.export import export, load_exported
from nas.quant import set_quant_enabled
from nas.space import SearchSpace
from nas.spec import ArchSpec, Sample
from nas.supernet import SpaceEntry, Supernet, get_space


def weight_count(spec: ArchSpec) -> int:
    """The weights of a spec's linear and conv layers (in × out per position)."""
    return sum(layer.in_features * layer.out_features for layer in spec.layers)


def probe_samples(space: SearchSpace, n: int) -> list[Sample]:
    """min, max and `n` seeded random samples: the corners and the bulk of the space."""
    return [space.min(), space.max(), *space.sample_many(n, rng=0)]


def registered_entries(names: Sequence[str]) -> Any:
    """A class-scoped ``entry`` fixture that runs a conformance class once per space in `names`.

    class TestMySpaces(SupernetConformance):
        entry = registered_entries(["my_space", "my_space_tiny"])
    """
    names = list(names)

    def entry(cls: type, request: pytest.FixtureRequest) -> SpaceEntry:
        return get_space(request.param)

    # a classmethod: the fixture runs once per class, not on one of its test instances
    return pytest.fixture(scope="class", params=names, ids=names, name="entry")(classmethod(entry))


class SpaceConformance:
    """The space-only tests (see the module docstring); a ``Test...`` subclass names the space."""

    #: The registered space under test (or override the ``entry`` fixture).
    space_name: ClassVar[str | None] = None
    #: How many random samples the spec tests freeze.
    n_spec_samples: ClassVar[int] = 5

    # Class-scoped fixtures are classmethods: they run once per class, not on one of its
    # test instances.
    @pytest.fixture(scope="class")
    @classmethod
    def entry(cls) -> SpaceEntry:
        if not cls.space_name:
            raise TypeError(
                f"{cls.__name__} subclasses a space conformance kit without naming a space; "
                "set space_name = '<registered space>' or entry = registered_entries([...])"
            )
        return get_space(cls.space_name)

    @pytest.fixture(scope="class")
    @classmethod
    def space(cls, entry: SpaceEntry) -> SearchSpace:
        return entry.space()

    def test_samples_validate_and_canonicalize_idempotently(self, space):
        for s in [space.default(), *probe_samples(space, 20)]:
            assert space.validate(s) == s
            c = space.canonical(s)
            assert list(c) == space.labels
            assert space.canonical(c) == c
            assert space.freeze(c) == space.freeze(s)  # unused labels never change the spec

    def test_every_sample_freezes_to_a_full_spec(self, space, entry):
        assert space.size > 1 and space.name == entry.name
        for s in probe_samples(space, self.n_spec_samples):
            spec = space.freeze(s)
            assert spec.blocks and spec.layers, "a spec lists its blocks and layers"
            assert ArchSpec.from_json(spec.to_json()) == spec
        assert weight_count(space.freeze(space.min())) < weight_count(space.freeze(space.max()))


class SupernetConformance(SpaceConformance):
    """The space tests plus the supernet's (see the module docstring)."""

    #: How many random samples (besides min and max) are extracted and compared.
    n_samples: ClassVar[int] = 20
    #: Supernets of more weights than this compare `n_samples_large` random samples: an
    #: extraction copies every weight, and the tiny `test_*` spaces already run the same
    #: code over `n_samples`.
    large_weights: ClassVar[int] = 2_000_000
    n_samples_large: ClassVar[int] = 6
    #: Largest |extracted − activated| allowed: the same maths on sliced and copied weights.
    atol: ClassVar[float] = 1e-5

    @pytest.fixture(scope="class")
    @classmethod
    def net(cls, entry: SpaceEntry) -> Supernet:
        torch.manual_seed(0)
        return entry.supernet().eval()

    def probe_count(self, net: Supernet) -> int:
        """Random samples to extract from `net` (see `large_weights`)."""
        big = weight_count(net.space.freeze(net.space.max())) > self.large_weights
        return self.n_samples_large if big else self.n_samples

    def output(self, y: Any) -> torch.Tensor:
        """The output tensor of a model call (a diffusers output or a tuple)."""
        return y.sample if hasattr(y, "sample") else y[0]

    @pytest.fixture
    def quant_off_after(self, net: Supernet):
        """Leaves the supernet, which the class's tests share, in float mode however a test ends."""
        yield
        set_quant_enabled(net, False)

    @pytest.mark.usefixtures("quant_off_after")
    @pytest.mark.parametrize("quant", [False, True], ids=["float", "quant"])
    def test_extracted_equals_activated(self, net, quant):
        set_quant_enabled(net, quant)
        inputs = net.example_inputs(batch=2, seed=1)
        worst = 0.0
        with torch.no_grad():
            for s in probe_samples(net.space, self.probe_count(net)):
                with net.activate(s):
                    y_super = self.output(net(**inputs))
                y_model = self.output(net.extract(s)(**inputs))
                assert y_model.shape == y_super.shape
                worst = max(worst, (y_model - y_super).abs().max().item())
        # Same maths on sliced vs copied weights (and the same fake-quant when on).
        assert worst <= self.atol, f"max |extracted - activated| = {worst:.3g}"

    def test_min_and_max_differ_and_activation_restores(self, net):
        inputs = net.example_inputs(batch=1, seed=2)
        with torch.no_grad():
            y_full = self.output(net(**inputs))
            with net.activate(net.space.min()):
                y_min = self.output(net(**inputs))
            y_after = self.output(net(**inputs))
        assert not torch.allclose(y_full, y_min)
        torch.testing.assert_close(y_after, y_full, rtol=0, atol=0)

    def test_invalid_sample_is_refused(self, net):
        s = net.space.max()
        label = net.space.labels[0]
        s[label] = "not-an-option"
        with pytest.raises(InvalidSampleError, match=label.replace(".", r"\.")), net.activate(s):
            pass

    @pytest.mark.usefixtures("quant_off_after")
    def test_export_round_trip(self, net, tmp_path: Path):
        s = net.space.sample(np.random.default_rng(3))
        set_quant_enabled(net, True)
        out = export(net, s, tmp_path / "arch", metrics={"val_loss": 0.5})
        set_quant_enabled(net, False)
        for f in (
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "arch.json",
            "quant_plan.json",
        ):
            assert (out / f).is_file()
        assert not list(out.glob("*.bin")) and not list(out.glob("*.pkl"))
        loaded = load_exported(out)
        direct = type(loaded.model).from_pretrained(out)  # plain diffusers loading works too
        assert loaded.spec == net.space.freeze(s)
        assert loaded.metrics == {"val_loss": 0.5}
        assert loaded.quant_plan == net.quant_plan(s)
        inputs = net.example_inputs(batch=2, seed=4)
        set_quant_enabled(net, True)
        with torch.no_grad():
            with net.activate(s):
                ref = self.output(net(**inputs))
            a, b = self.output(loaded.model(**inputs)), self.output(direct(**inputs))
        torch.testing.assert_close(a, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, a, rtol=0, atol=0)
