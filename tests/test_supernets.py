"""Properties every registered space must have, parametrized over the registry.

For min, max and 20 random samples the extracted standalone model computes
what the activated supernet computes; export → from_pretrained gives the same
model back. Spaces too large for a CPU test (SD-sized) are checked on their
specs only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES, ArchSpec, InvalidSampleError, export, load_exported
from nas.quant import set_quant_enabled

MAX_TEST_WEIGHTS = 20_000_000


def _weights(spec: ArchSpec) -> int:
    return sum(layer.in_features * layer.out_features for layer in spec.layers)


def _small_spaces() -> list[str]:
    out = []
    for name in SPACES.names():
        space = SPACES.get(name).space()
        if _weights(space.freeze(space.max())) <= MAX_TEST_WEIGHTS:
            out.append(name)
    return out


SMALL = _small_spaces()


def _out(y) -> torch.Tensor:
    return y.sample if hasattr(y, "sample") else y[0]


def _samples(space, n: int = 20) -> list[dict]:
    return [space.min(), space.max(), *space.sample_many(n, rng=0)]


@pytest.fixture(scope="module", params=SMALL)
def net(request):
    torch.manual_seed(0)
    return SPACES.get(request.param).supernet().eval()


def test_registry_has_real_and_tiny_spaces():
    names = SPACES.names()
    assert {"mobile_unet", "mobile_dit"} <= set(names)
    assert any(n.startswith("test_") for n in names)


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_freezes_to_a_full_spec(name):
    space = SPACES.get(name).space()
    assert space.size > 1 and space.name == name
    for s in _samples(space, 5):
        spec = space.freeze(s)
        assert spec.blocks and spec.layers, "a spec lists its blocks and layers"
        assert ArchSpec.from_json(spec.to_json()) == spec
    assert _weights(space.freeze(space.min())) < _weights(space.freeze(space.max()))


@pytest.mark.parametrize("quant", [False, True], ids=["float", "quant"])
def test_extracted_equals_activated(net, quant):
    set_quant_enabled(net, quant)
    inputs = net.example_inputs(batch=2, seed=1)
    worst = 0.0
    with torch.no_grad():
        for s in _samples(net.space):
            with net.activate(s):
                y_super = _out(net(**inputs))
            model = net.extract(s)
            y_model = _out(model(**inputs))
            assert y_model.shape == y_super.shape
            worst = max(worst, (y_model - y_super).abs().max().item())
    set_quant_enabled(net, False)
    # Same maths on sliced vs copied weights (and the same fake-quant when on).
    assert worst <= 1e-5, f"max |extracted - activated| = {worst:.3g}"


def test_min_and_max_differ_and_activation_restores(net):
    inputs = net.example_inputs(batch=1, seed=2)
    with torch.no_grad():
        y_full = _out(net(**inputs))
        with net.activate(net.space.min()):
            y_min = _out(net(**inputs))
        y_after = _out(net(**inputs))
    assert not torch.allclose(y_full, y_min)
    torch.testing.assert_close(y_after, y_full, rtol=0, atol=0)


def test_invalid_sample_is_refused(net):
    s = net.space.max()
    label = net.space.labels[0]
    s[label] = "not-an-option"
    with pytest.raises(InvalidSampleError, match=label.replace(".", r"\.")), net.activate(s):
        pass


def test_export_round_trip(net, tmp_path):
    s = net.space.sample(np.random.default_rng(3))
    set_quant_enabled(net, True)
    out = export(net, s, tmp_path / "arch", metrics={"val_loss": 0.5})
    set_quant_enabled(net, False)
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "arch.json", "quant_plan.json"):
        assert (out / f).is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pkl"))
    loaded = load_exported(out)
    cls = type(loaded.model)
    direct = cls.from_pretrained(out)  # plain diffusers loading works too
    assert loaded.spec == net.space.freeze(s)
    assert loaded.metrics == {"val_loss": 0.5}
    assert loaded.quant_plan == net.quant_plan(s)
    inputs = net.example_inputs(batch=2, seed=4)
    set_quant_enabled(net, True)
    with torch.no_grad():
        with net.activate(s):
            ref = _out(net(**inputs))
        a, b = _out(loaded.model(**inputs)), _out(direct(**inputs))
    set_quant_enabled(net, False)
    torch.testing.assert_close(a, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(b, a, rtol=0, atol=0)
