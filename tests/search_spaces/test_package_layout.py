"""The family packages keep their old import surface: names importable from the package,
exports that record the pre-package module path still load, registration happens once."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES, export, load_exported
from nas.export import ARCH_FILE

# Public names of the single-file modules before they became packages.
OLD_NAMES = {
    "search_spaces.mobile_unet": (
        "ATTN_NORM_EPS BasicTransformerBlock DEFAULT_QUANT DownBlock Downsample2D FAMILY "
        "FAMILY_NAME FF_MULT FeedForward GEGLU HeadBlock LN_EPS MOBILE_UNET MOBILE_UNET_SD15 "
        "MidBlock MobileUNet MobileUNetConfig MobileUNetSupernet QUANT_SUFFIX RESNET_EPS "
        "ResnetBlock2D TEST_MOBILE_UNET TEST_MOBILE_UNET_ATTN TimeEmbeddingBlock "
        "TimestepEmbedding Transformer2DModel TransformerIOBlock UpBlock Upsample2D block_model "
        "check_teacher_config diffusers_config example_inputs inner_width make_space "
        "make_supernet max_layer_paths standalone_config"
    ),
    "search_spaces.mobile_dit": (
        "AdaLNSingleBlock AdaLayerNormSingle CaptionProjection CombinedTimestepEmbeddings "
        "DEFAULT_QUANT DiTBlock DiTBlockModel DiTFinalBlock FAMILY FAMILY_NAME FeedForward "
        "GELUProj MOBILE_DIT MobileDiT MobileDiTConfig MobileDiTSupernet NORM_EPS PatchEmbed "
        "QUANT_SUFFIX TEST_MOBILE_DIT TIME_FREQ_DIM TimestepEmbedding block_model "
        "example_inputs ff_inner make_space make_supernet standalone_config"
    ),
}
# (space, the model class an export recorded before the split)
OLD_QUALNAMES = [
    ("test_mobile_unet", "search_spaces.mobile_unet.MobileUNet"),
    ("test_mobile_dit", "search_spaces.mobile_dit.MobileDiT"),
]


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_every_old_public_name_is_importable_from_the_package(module):
    mod = importlib.import_module(module)
    missing = [n for n in OLD_NAMES[module].split() if not hasattr(mod, n)]
    assert missing == []


def test_both_families_share_one_timestep_mlp_and_feed_forward():
    from search_spaces import common, mobile_dit, mobile_unet

    for name in ("TimestepEmbedding", "FeedForward"):
        assert getattr(mobile_unet, name) is getattr(mobile_dit, name) is getattr(common, name)


def test_importing_the_submodules_again_registers_nothing_twice():
    before = SPACES.names()
    for family in ("mobile_unet", "mobile_dit"):
        for sub in ("", ".config", ".space", ".blocks", ".model", ".supernet", ".latency"):
            importlib.import_module(f"search_spaces.{family}{sub}")
    assert SPACES.names() == before
    for name in ("mobile_unet", "mobile_unet_sd15", "test_mobile_unet", "test_mobile_dit"):
        assert name in before


@pytest.mark.parametrize(("space", "old_qualname"), OLD_QUALNAMES)
def test_exports_that_name_the_pre_package_module_path_still_load(tmp_path, space, old_qualname):
    entry = SPACES.get(space)
    net = entry.supernet().eval()
    sample = net.space.min()
    out = export(net, sample, tmp_path / "new")
    arch = json.loads((out / ARCH_FILE).read_text())
    cls = entry.family.standalone_cls
    assert arch["model_class"] == f"{cls.__module__}.{cls.__qualname__}"
    inputs = net.example_inputs(batch=2, seed=0)
    with torch.no_grad(), net.activate(sample):
        want = net(**inputs, return_dict=False)[0]

    arch["model_class"] = old_qualname  # what an export written before the split records
    (out / ARCH_FILE).write_text(json.dumps(arch))
    model = load_exported(out).model.eval()
    assert type(model) is cls
    with torch.no_grad():
        got = model(**inputs, return_dict=False)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
