"""Block micro-models (`Family.block_model`), parametrized over every registered space.

For min, max and random samples each spec block builds as a float module of exactly
its dims: it runs on its example inputs, its outputs are what the next block of the
spec takes (the U-Net's skip stack and the DiT's streams are replayed on shapes), and
its conv / linear weights are the block's `LayerSpec.params`. SD-sized spaces are
left out (too large for CPU tests), as in tests/test_supernets.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES, ArchSpec, BlockSpec, ConfigError
from nas.quant import QuantMixin

MAX_TEST_WEIGHTS = 20_000_000
Shape = tuple[int, ...]


def _small_spaces() -> list[str]:
    out = []
    for name in SPACES.names():
        space = SPACES.get(name).space()
        if sum(layer.params for layer in space.freeze(space.max()).layers) <= MAX_TEST_WEIGHTS:
            out.append(name)
    return out


SMALL = _small_spaces()


def _outputs(y: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


def _weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# -- each block's outputs, from its own dims ----------------------------------------------
def _expected(kind: str, d: dict, b: int) -> list[Shape]:
    if kind in ("conv_in", "resnet", "conv_out"):
        return [(b, d["out"], d["H"], d["W"])]
    if kind == "downsample":
        return [(b, d["out"], (d["H"] + 1) // 2, (d["W"] + 1) // 2)]
    if kind == "upsample":
        return [(b, d["out"], 2 * d["H"], 2 * d["W"])]
    if kind == "time_embedding":
        return [(b, d["out"])]
    if kind == "transformer_io":
        return [(b, d["width"], d["H"], d["W"])]
    if kind in ("transformer", "dit_block", "patch_embed"):
        return [(b, d["tokens"], d["width"])]
    if kind == "adaln_single":
        return [(b, d["out"]), (b, d["width"])]
    if kind == "caption_projection":
        return [(b, d["context_len"], d["width"])]
    if kind == "dit_final":
        side = d["grid"] * d["patch_size"]
        return [(b, d["out_channels"], side, side)]
    raise AssertionError(f"block kind {kind!r} is new: add its output shapes to _expected")


# -- replaying each family's data flow on shapes -------------------------------------------
Run = Callable[[BlockSpec], tuple[list[Shape], list[Shape]]]


def _unet_flow(spec: ArchSpec, run: Run) -> None:
    """`UNet2DConditionModel.forward` on shapes: every block takes what the last gave."""
    meta = dict(spec.meta)
    x: Shape = ()
    temb: Shape = ()
    skips: list[Shape] = []
    for stage in spec.stages:
        down, up = stage.name.startswith("down."), stage.name.startswith("up.")
        for i, blk in enumerate(stage.blocks):
            ins, outs = run(blk)
            if blk.kind == "time_embedding":
                temb = outs[0]
                continue
            if blk.kind == "conv_in":
                assert ins[0][1] == meta["in_channels"]
                x = outs[0]
                skips.append(x)
                continue
            if blk.kind == "transformer":
                b, c, h, w = x
                assert ins[0] == outs[0] == (b, h * w, c), blk.path
                assert ins[1] == (b, meta["context_len"], meta["cross_attention_dim"]), blk.path
            else:
                want = x
                if blk.kind == "resnet":
                    assert ins[1] == temb, blk.path
                    if up:  # the skip of the mirrored down block is concatenated
                        skip = skips.pop()
                        assert skip[2:] == x[2:], blk.path
                        want = (x[0], x[1] + skip[1], *x[2:])
                assert ins[0] == want, blk.path
                x = outs[0]
            nxt = stage.blocks[i + 1].kind if i + 1 < len(stage.blocks) else None
            if down and (blk.kind == "downsample" or nxt in ("resnet", "downsample", None)):
                skips.append(x)
    assert not skips, "up blocks consumed every skip"
    assert x[1] == meta["out_channels"] and x[2:] == (meta["sample_size"],) * 2


def _dit_flow(spec: ArchSpec, run: Run) -> None:
    """`PixArtTransformer2DModel.forward` on shapes: patches → blocks → image."""
    image: Shape = ()
    x: Shape = ()
    temb: Shape = ()
    emb: Shape = ()
    ctx: Shape = ()
    for blk in spec.blocks:
        ins, outs = run(blk)
        if blk.kind == "patch_embed":
            image, x = ins[0], outs[0]
        elif blk.kind == "adaln_single":
            temb, emb = outs
        elif blk.kind == "caption_projection":
            ctx = outs[0]
        elif blk.kind == "dit_block":
            assert ins == ([x, temb, ctx] if blk.d["cross_attention"] else [x, temb]), blk.path
            x = outs[0]
        elif blk.kind == "dit_final":
            assert ins == [x, emb], blk.path
            x = outs[0]
    assert x[0] == image[0] and x[2:] == image[2:]


FLOWS = {"mobile_unet": _unet_flow, "mobile_dit": _dit_flow}


@pytest.mark.parametrize("name", SMALL)
def test_every_block_builds_runs_and_is_its_spec(name):
    entry = SPACES.get(name)
    space = entry.space()
    assert entry.family.block_model is not None, f"family {entry.family.name} has no block_model"
    flow = FLOWS[entry.family.name]
    built: dict[tuple, tuple[list[Shape], list[Shape]]] = {}

    def run(blk: BlockSpec) -> tuple[list[Shape], list[Shape]]:
        key = (blk.kind, blk.dims)
        if key not in built:  # blocks of equal kind and dims share one micro-model
            module, inputs = entry.family.block_model(blk.kind, blk.d, 1)
            assert not module.training, blk.path
            assert all(m.quant is None for m in module.modules() if isinstance(m, QuantMixin)), (
                f"{blk.path}: block models are float"
            )
            assert _weights(module) == sum(layer.params for layer in blk.layers), blk.path
            with torch.no_grad():
                outs = [tuple(y.shape) for y in _outputs(module(*inputs))]
            assert outs == _expected(blk.kind, blk.d, 1), blk.path
            built[key] = ([tuple(t.shape) for t in inputs], outs)
        return built[key]

    for s in (space.min(), space.max(), *space.sample_many(5, rng=3)):
        flow(space.freeze(s), run)


@pytest.mark.parametrize("name", SMALL)
def test_block_models_are_deterministic_and_batched(name):
    entry = SPACES.get(name)
    space = entry.space()
    blk = max(space.freeze(space.max()).blocks, key=lambda b: len(b.layers))
    state = torch.random.get_rng_state()
    m1, in1 = entry.family.block_model(blk.kind, blk.d, 3)
    m2, in2 = entry.family.block_model(blk.kind, blk.d, 3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a, b) for a, b in zip(in1, in2)) and all(t.shape[0] == 3 for t in in1)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert all(y.shape[0] == 3 for y in _outputs(m1(*in1)))


@pytest.mark.parametrize("family", ["mobile_unet", "mobile_dit"])
def test_unknown_kinds_and_missing_dims_are_config_errors(family):
    fam = SPACES.get(family).family
    known = "resnet" if family == "mobile_unet" else "dit_block"
    with pytest.raises(ConfigError, match=rf"no block kind 'attention'.*{known}"):
        fam.block_model("attention", {}, 1)
    with pytest.raises(ConfigError, match="needs dim"):
        fam.block_model(known, {"width": 8}, 1)


def test_dit_block_without_cross_attention_takes_two_inputs():
    from search_spaces.mobile_dit import block_model

    dims = {
        "width": 16,
        "tokens": 16,
        "heads": 2,
        "dim_head": 8,
        "mlp_ratio": 2,
        "ff_inner": 32,
        "cross_attention": False,
        "context_len": 0,
        "context_dim": 0,
    }
    module, inputs = block_model("dit_block", dims, 2)
    assert [t.shape for t in inputs] == [(2, 16, 16), (2, 96)]
    assert _weights(module) == 4 * 16 * 16 + 2 * 16 * 32
    with torch.no_grad():
        assert module(*inputs).shape == (2, 16, 16)


def _first_block(space_name: str, kind: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    entry = SPACES.get(space_name)
    space = entry.space()
    blk = next(b for b in space.freeze(space.min()).blocks if b.kind == kind)
    return entry.family.block_model(blk.kind, blk.d, 1)


EXPORTED = [("test_mobile_unet", "resnet"), ("test_mobile_dit", "dit_block")]


@pytest.mark.slow
@pytest.mark.parametrize("space_name, kind", EXPORTED)
def test_block_exports_to_onnx_and_runs_the_same(space_name, kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    module, inputs = _first_block(space_name, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, inputs, dynamo=True, verbose=False)
    program.save(str(tmp_path / "block.onnx"))
    session = ort.InferenceSession(str(tmp_path / "block.onnx"))
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    (got,) = session.run(None, feed)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), module(*inputs), rtol=1e-4, atol=1e-5)
