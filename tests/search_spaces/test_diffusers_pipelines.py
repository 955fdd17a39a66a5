"""Exported models are drop-in diffusers denoisers: diffusers' own pipelines run them.

Everything besides the exported model (tokenizers, text encoders, VAEs) is tiny and
randomly initialised, saved to tmp_path and loaded from there: no network. The models
are random too, so the tests check the contract (shapes, finite values, the guidance
path, equality with a hand-written sampling loop, clear refusals), not image quality.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES, export, load_exported
from nas.errors import ConfigError
from nas.quant.layers import QuantMixin
from nas.tasks.base import DenoiserIO
from nas.tasks.denoising import context_table
from nas.testing.models import tiny_vae
from search_spaces.mobile_dit import MobileDiT
from search_spaces.mobile_unet import MobileUNet
from search_spaces.mobile_unet.model import DIFFUSERS_FIXED_CONFIG

UNET_SPACE = "test_mobile_unet"  # 1 channel, 8×8, context width 8: digits-shaped
DIT_SPACE = "test_mobile_dit"  # 1 channel, 8×8, caption_channels 16
STEPS = 3
PROMPTS = ["a b c", "d"]
LETTERS = "abcdefgh"


# ---------------------------------------------------------------------------- fixtures
def _export(space: str, out: Path, quantized: bool) -> Path:
    net = SPACES.get(space).supernet().eval()
    # min: every layer at the cheapest scheme (w4a8:lsq); max: full precision (fp32)
    sample = net.space.min() if quantized else net.space.max()
    return export(net, sample, out)


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(UNET_SPACE, tmp_path_factory.mktemp("unet"), quantized=False)


@pytest.fixture(scope="module")
def quant_unet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(UNET_SPACE, tmp_path_factory.mktemp("unet_q"), quantized=True)


@pytest.fixture(scope="module")
def dit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(DIT_SPACE, tmp_path_factory.mktemp("dit"), quantized=False)


def _reloaded(model: Any, path: Path) -> Any:
    """`model` saved to `path` and loaded back from there, offline, as a pipeline would."""
    model.save_pretrained(path)
    return type(model).from_pretrained(path, local_files_only=True).eval()


def _clip(root: Path, hidden: int) -> tuple[Any, Any]:
    """CLIPTokenizer from a vocab / merges written here and a random 1-layer CLIPTextModel."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = root / "tokenizer"
    tok_dir.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:  # single-letter words: BPE ends each word with "</w>"
        vocab[c] = len(vocab)
        vocab[f"{c}</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=8, local_files_only=True)
    assert tokenizer("a b").input_ids == [0, vocab["a</w>"], vocab["b</w>"], 1]

    torch.manual_seed(0)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    return tokenizer, _reloaded(encoder, root / "text_encoder")


def _t5(root: Path, d_model: int) -> tuple[Any, Any]:
    """A T5TokenizerFast (a `tokenizers` Unigram, as T5's) and a random 1-layer T5 encoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{c}", -1.0) for c in LETTERS]  # "▁a": a word-initial "a"
    tk = Tokenizer(models.Unigram(pieces, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    T5TokenizerFast(
        tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    ).save_pretrained(root / "tokenizer")
    tokenizer = T5TokenizerFast.from_pretrained(root / "tokenizer", local_files_only=True)
    assert tokenizer("a b").input_ids == [3, 4, 1]

    torch.manual_seed(0)
    encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(pieces),
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    return tokenizer, _reloaded(encoder, root / "text_encoder")


def _sd_pipeline(model: MobileUNet, root: Path) -> Any:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tokenizer, text_encoder = _clip(root, model.config.cross_attention_dim)
    pipe = StableDiffusionPipeline(
        vae=_reloaded(tiny_vae(model.config.in_channels), root / "vae"),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=model,
        # Stable Diffusion's scheduler settings (the pipeline warns about other ones)
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _batch_sizes(model: nn.Module) -> list[int]:
    """The batch size of every forward call of `model` from now on."""
    seen: list[int] = []
    model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((args[0] if args else kwargs["sample"]).shape[0]),
        with_kwargs=True,
    )
    return seen


# ---------------------------------------------------------------------------- MobileUNet
def test_unet_forward_takes_unet2dcondition_arguments():
    from diffusers import UNet2DConditionModel

    ours = inspect.signature(MobileUNet.forward).parameters
    theirs = inspect.signature(UNet2DConditionModel.forward).parameters
    assert list(ours) == list(theirs)
    # encoder_hidden_states is required in diffusers; here None reaches a clear refusal
    assert all(ours[k].default == theirs[k].default for k in ours if k != "encoder_hidden_states")


def test_unet_config_carries_what_pipelines_read(unet_dir):
    model = load_exported(unet_dir).model
    for key, value in DIFFUSERS_FIXED_CONFIG.items():
        assert getattr(model.config, key) == value
    assert (model.config.sample_size, model.config.in_channels) == (8, 1)
    with pytest.raises(ConfigError, match="time_cond_proj_dim"):
        MobileUNet(time_cond_proj_dim=4)


def test_unet_exports_without_the_diffusers_keys_still_load(unet_dir, tmp_path):
    # An export written before the keys existed: same directory, config.json without them.
    import shutil

    old = Path(shutil.copytree(unet_dir, tmp_path / "old"))
    cfg = json.loads((old / "config.json").read_text())
    for key in DIFFUSERS_FIXED_CONFIG:
        cfg.pop(key, None)
    (old / "config.json").write_text(json.dumps(cfg))
    model, new = load_exported(old).model.eval(), load_exported(unet_dir).model.eval()
    assert model.config.time_cond_proj_dim is None
    x, ctx = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 5, ctx).sample, new(x, 5, ctx).sample)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0], ids=["no_cfg", "cfg"])
def test_stable_diffusion_pipeline_runs_the_exported_unet(unet_dir, tmp_path, guidance_scale):
    model = load_exported(unet_dir).model.eval()
    pipe = _sd_pipeline(model, tmp_path)
    assert pipe.vae_scale_factor == 2
    batches = _batch_sizes(model)
    kw = {"num_inference_steps": STEPS, "guidance_scale": guidance_scale}
    images = pipe(PROMPTS, output_type="np", generator=torch.Generator().manual_seed(0), **kw)
    latents = pipe(PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(0), **kw)
    images, latents = images.images, latents.images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    assert latents.shape == (2, 1, 8, 8) and torch.isfinite(latents).all()
    # classifier-free guidance runs the unconditional and the text batch together
    assert pipe.do_classifier_free_guidance is (guidance_scale > 1)
    assert set(batches) == {4 if guidance_scale > 1 else 2}


def test_stable_diffusion_pipeline_runs_the_quantized_export(quant_unet_dir, tmp_path):
    exported = load_exported(quant_unet_dir)
    model = exported.model.eval()
    # the quant plan is active: every planned layer fake-quantizes with its scheme
    assert exported.quant_plan and model.config.quant_plan == exported.quant_plan
    layers = dict(model.named_modules())
    for path, scheme in exported.quant_plan.items():
        layer = layers[path]
        assert isinstance(layer, QuantMixin) and layer.quant_enabled
        assert str(layer.quant) == scheme
    assert "w4a8:lsq" in exported.quant_plan.values()
    pipe = _sd_pipeline(model, tmp_path)
    out = pipe(
        PROMPTS,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


class ClassConditioned(nn.Module):
    """An unconditional denoiser: a class-conditional MobileUNet with one class's context bound.

    MobileUNet refuses a missing context on purpose: it was trained with a context in every
    batch (here the digits task's table of class contexts), so no made-up null context has a
    meaning. An unconditional pipeline, which calls ``unet(sample, t)``, therefore gets the
    model with the context of the class to generate bound to it.
    """

    def __init__(self, unet: MobileUNet, context: Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("context", context)  # (L, D)

    @property
    def config(self) -> Any:  # what DDIMPipeline reads: sample_size, in_channels
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: Tensor, timestep: Tensor | float, return_dict: bool = True) -> Any:
        context = self.context.expand(sample.shape[0], -1, -1)
        return self.unet(sample, timestep, context, return_dict=return_dict)


def test_ddim_pipeline_equals_a_hand_written_ddim_loop(unet_dir):
    from diffusers import DDIMPipeline, DDIMScheduler

    model = load_exported(unet_dir).model.eval()
    with pytest.raises(ValueError, match="encoder_hidden_states.*DDIMPipeline"):
        model(torch.randn(1, 1, 8, 8), 10)
    io = DenoiserIO(channels=1, size=8, context_len=3, context_dim=8)
    context = context_table(10, io, seed=0)[3]  # the context of digit 3
    pipe = DDIMPipeline(unet=ClassConditioned(model, context), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    got = pipe(
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=STEPS,
        output_type="np",
    ).images

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g)
    ctx = context.expand(2, -1, -1)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = model(x, t, ctx).sample
            x = scheduler.step(eps, t, x, eta=0.0, generator=g).prev_sample
    want = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert got.shape == (2, 8, 8, 1)
    assert want.std() > 0.01  # not a saturated image: the comparison means something
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


_T = torch.zeros(2, 3)
REFUSED = {
    "class_labels": (torch.tensor([1, 2]), "class embedding"),
    "timestep_cond": (torch.zeros(2, 4), "guidance-scale embedding"),
    "attention_mask": (torch.tensor([[1, 1, 0]] * 2), "masked positions"),
    "encoder_attention_mask": (torch.tensor([[True, False, True]] * 2), "masked positions"),
    "cross_attention_kwargs": ({"scale": 0.5}, "LoRA"),
    "added_cond_kwargs": ({"text_embeds": _T, "time_ids": _T}, "added embeddings"),
    "down_block_additional_residuals": ((_T,), "ControlNet"),
    "mid_block_additional_residual": (_T, "ControlNet"),
    "down_intrablock_additional_residuals": ((_T,), "T2I-Adapter"),
}


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_unet_refuses_inputs_it_cannot_honour(unet_dir, key):
    model = load_exported(unet_dir).model.eval()
    value, why = REFUSED[key]
    x, ctx = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=f"MobileUNet cannot honour {key}.*{why}"):
        model(x, 5, ctx, **{key: value})


def test_unet_ignores_empty_inputs_and_broadcasts_timesteps(unet_dir):
    model = load_exported(unet_dir).model.eval()
    x, ctx = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 8)
    empty = {
        "class_labels": None,
        "timestep_cond": None,
        "attention_mask": torch.ones(2, 64),
        "encoder_attention_mask": torch.ones(2, 3, dtype=torch.bool),
        "cross_attention_kwargs": {},
        "added_cond_kwargs": {},
        "down_block_additional_residuals": (),
        "mid_block_additional_residual": None,
        "down_intrablock_additional_residuals": None,
    }
    with torch.no_grad():
        want = model(x, torch.tensor([5, 5]), ctx).sample
        for t in (5, 5.0, torch.tensor(5), torch.tensor([5])):
            got = model(x, t, encoder_hidden_states=ctx, **empty).sample
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 5\).*\(2, tokens, 8\)"):
        model(x, 5, torch.randn(2, 3, 5))


# ---------------------------------------------------------------------------- MobileDiT
def test_dit_config_carries_what_pixart_reads():
    model = MobileDiT(sample_size=8, width=16, num_attention_heads=[1], attention_head_dim=8)
    # the pipeline computes out_channels // 2 to detect a learned-σ head: never None
    assert model.config.out_channels == model.config.in_channels == 1
    assert model.config.use_additional_conditions is False
    with pytest.raises(ConfigError, match="use_additional_conditions"):
        MobileDiT(use_additional_conditions=True)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.5], ids=["no_cfg", "cfg"])
def test_pixart_alpha_pipeline_runs_the_exported_dit(dit_dir, tmp_path, guidance_scale):
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    model = load_exported(dit_dir).model.eval()
    tokenizer, text_encoder = _t5(tmp_path, model.config.caption_channels)
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_reloaded(tiny_vae(model.config.in_channels), tmp_path / "vae"),
        transformer=model,
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    batches = _batch_sizes(model)
    kw: dict[str, Any] = {
        "num_inference_steps": STEPS,
        "guidance_scale": guidance_scale,
        "use_resolution_binning": False,  # its bins exist for sample sizes 32 / 64 / 128 only
        "clean_caption": False,  # needs bs4 and ftfy
        "max_sequence_length": 6,
    }
    images = pipe(PROMPTS, output_type="np", generator=torch.Generator().manual_seed(0), **kw)
    latents = pipe(PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(0), **kw)
    images, latents = images.images, latents.images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    assert latents.shape == (2, 1, 8, 8) and torch.isfinite(latents).all()
    assert set(batches) == {4 if guidance_scale > 1 else 2}


def test_dit_ignores_micro_conditions_and_refuses_what_it_cannot_honour(dit_dir):
    model = load_exported(dit_dir).model.eval()
    x, ctx, t = torch.randn(2, 1, 8, 8), torch.randn(2, 2, 16), torch.tensor([5, 5])
    with torch.no_grad():
        want = model(x, ctx, t).sample
        # what PixArtAlphaPipeline passes (tensors for sample_size 128, else None)
        for cond in (
            {"resolution": None, "aspect_ratio": None},
            {"resolution": torch.tensor([[16.0, 16.0]] * 2), "aspect_ratio": torch.ones(2, 1)},
        ):
            got = model(x, ctx, 5, added_cond_kwargs=cond, cross_attention_kwargs={}).sample
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cannot honour added_cond_kwargs \['style'\]"):
        model(x, ctx, t, added_cond_kwargs={"style": torch.ones(2)})
    with pytest.raises(ValueError, match="cannot honour cross_attention_kwargs.*LoRA"):
        model(x, ctx, t, cross_attention_kwargs={"scale": 0.5})
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, None, t)
