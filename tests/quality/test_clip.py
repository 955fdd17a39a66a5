"""The CLIP judge (FID in CLIP space, CLIP score) and what image folders give it.

The CLIP model is tiny and random, saved to tmp_path and loaded from there (no
network): the tests check the contract — loading and its refusals, the preprocessing
against CLIP's own processor, FID against a NumPy/SciPy Fréchet distance of the same
features, CLIP score against a hand computation — not image quality. The image-folder
tests check the prompts of the caption file and the pixel-space view of a latent task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

from nas.errors import ConfigError
from nas.quality.base import Conditions
from nas.quality.clip import ClipImageFeatures, ClipJudge, load_clip
from nas.tasks import DenoiserIO, ImageFolderDenoising, save_caption_embeddings
from nas.tasks.image_folder import load_images
from nas.testing.models import tiny_vae

LETTERS = "abcdefgh"
PROJ = 8  # the tiny CLIP's embedding width
SIDE = 16  # and its image size
CTX_IO = DenoiserIO(channels=1, size=8, context_len=3, context_dim=8)  # a captioned task


# ---------------------------------------------------------------------------- fixtures
def _tokenizer(root: Path) -> Any:
    """A CLIPTokenizer of single-letter words, from a vocab / merges written here."""
    from transformers import CLIPTokenizer

    root.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:  # BPE ends each word with "</w>"
        vocab[c] = len(vocab)
        vocab[f"{c}</w>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(root, model_max_length=8, local_files_only=True)


def _clip_model(vocab_size: int) -> Any:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 8,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": SIDE,
        "patch_size": 8,
    }
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJ)
    return CLIPModel(cfg).eval()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny CLIP directory (model + processor) and the model that was saved in it."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    root = tmp_path_factory.mktemp("clip")
    tokenizer = _tokenizer(root / "tok")
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size=SIDE, crop_size=SIDE), tokenizer=tokenizer
    )
    model = _clip_model(len(tokenizer))
    out = root / "clip"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out, model


def smooth_images(n: int, seed: int, channels: int = 3, side: int = SIDE) -> Tensor:
    """`n` random images (n, C, side, side) in [-1, 1]: upsampled 4×4 noise, so they
    vary like pictures rather than like pixel noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((n, channels, 4, 4), generator=g) * 2 - 1
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


def quantised(x: Tensor) -> tuple[Tensor, list[np.ndarray]]:
    """`x` rounded to 8-bit levels, and the same images as uint8 HWC arrays (PIL's view)."""
    u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (n, 3, H, W)
    return u8.float() / 127.5 - 1, [a.permute(1, 2, 0).numpy() for a in u8]


def frechet_numpy(real: np.ndarray, fake: np.ndarray) -> float:
    """‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½) (Heusel et al. 2017, eq. 6)."""
    mu_r, mu_g = real.mean(0), fake.mean(0)
    cov_r, cov_g = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(cov_r @ cov_g).real
    return float(((mu_r - mu_g) ** 2).sum() + np.trace(cov_r + cov_g - 2 * root))


# ----------------------------------------------------------------------------- loading
def test_load_clip_round_trips_the_saved_model_and_processor(clip):
    path, saved = clip
    model, processor = load_clip(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    theirs = saved.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    ids = processor.tokenizer("a b").input_ids
    assert ids == [0, 2 + 2 * LETTERS.index("a") + 1, 2 + 2 * LETTERS.index("b") + 1, 1]
    pixels = processor.image_processor(
        images=[np.zeros((SIDE, SIDE, 3), np.uint8)], return_tensors="pt"
    )["pixel_values"]
    assert pixels.shape == (1, 3, SIDE, SIDE)


def test_load_clip_refuses_pickles_and_incomplete_directories(clip, tmp_path: Path):
    path, saved = clip
    with pytest.raises(ConfigError, match=r"quality\.clip_model.*nowhere.*does not exist"):
        load_clip(tmp_path / "nowhere")
    pickled = tmp_path / "pickled"
    shutil.copytree(path, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(saved.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"quality\.clip_model.*only pickled.*pytorch_model\.bin"):
        load_clip(pickled)
    no_config = tmp_path / "no_config"
    shutil.copytree(path, no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"no_config.*no config\.json.*save_pretrained"):
        load_clip(no_config)
    no_tok = tmp_path / "no_tok"
    shutil.copytree(path, no_tok)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"quality\.clip_model.*no tokenizer"):
        load_clip(no_tok)
    text_only = tmp_path / "text_only"
    saved.text_model.save_pretrained(text_only)  # a CLIPTextModel-style config
    cfg = json.loads((path / "config.json").read_text())["text_config"]
    (text_only / "config.json").write_text(json.dumps({**cfg, "model_type": "clip_text_model"}))
    with pytest.raises(ConfigError, match=r"'clip_text_model'.*not a full CLIP"):
        load_clip(text_only)


# ---------------------------------------------------------------------------- features
def test_image_features_match_clips_own_processor_and_are_batch_independent(clip):
    path, _ = clip
    model, processor = load_clip(path)
    feats = ClipImageFeatures(model, processor.image_processor, batch_size=3)
    assert feats.num_features == PROJ and not feats.train().training  # stays frozen
    x, arrays = quantised(smooth_images(7, seed=1))
    emb = feats(x)
    assert emb.shape == (7, PROJ) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    # the processor's own path (PIL, rescale, normalise) on the same 8-bit images
    pixels = processor.image_processor(images=arrays, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(emb, want, atol=1e-4, rtol=1e-4)
    # batching changes nothing: one at a time, or all in one batch
    one = torch.cat([feats(x[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(emb, one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        emb, ClipImageFeatures(model, processor.image_processor, 64)(x), atol=1e-5, rtol=1e-5
    )
    # grey is repeated to RGB; larger images are resized (antialiased) to the CLIP size
    grey = x[:, :1]
    torch.testing.assert_close(feats(grey), feats(grey.expand(-1, 3, -1, -1)))
    big = F.interpolate(x, size=(40, 40), mode="nearest")
    assert feats(big).shape == (7, PROJ)
    assert not torch.allclose(feats(big), feats(-x))
    with pytest.raises(ConfigError, match="n, 1 or 3, H, W"):
        feats(torch.zeros(2, 2, SIDE, SIDE))


# --------------------------------------------------------------------------------- FID
def test_fid_is_zero_on_the_reference_larger_elsewhere_and_equals_scipy(clip):
    path, _ = clip
    ref = smooth_images(40, seed=2)
    judge = ClipJudge(path, ref, metrics=("fid",))
    assert judge.metric_names == ("fid", "clip_score") and judge.metrics == ("fid",)
    same = judge.score(ref, Conditions(n=40))["fid"]
    g = torch.Generator().manual_seed(3)
    shifted = (0.5 * ref + 0.4 + 0.3 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    moved = judge.score(shifted, Conditions(n=40))["fid"]
    real = judge.features(ref).double().numpy()
    fake = judge.features(shifted).double().numpy()
    scale = float(np.trace(np.cov(real, rowvar=False)))  # the size of the features' spread
    assert abs(same) < 1e-3 * scale
    assert moved > 0.1 * scale
    assert moved == pytest.approx(frechet_numpy(real, fake), rel=1e-3, abs=1e-4 * scale)
    # the reference statistics survive every reset: the same images score the same
    other = smooth_images(25, seed=4)
    first = judge.score(other, Conditions(n=25))["fid"]
    assert judge.score(other, Conditions(n=25))["fid"] == pytest.approx(first, rel=1e-6)
    assert first == pytest.approx(
        frechet_numpy(real, judge.features(other).double().numpy()), rel=1e-3
    )


def test_fid_refusals(clip):
    path, _ = clip
    with pytest.raises(ConfigError, match="at least 2 held-out"):
        ClipJudge(path, smooth_images(1, seed=0), metrics=("fid",))
    with pytest.raises(ConfigError, match=r"measures.*not \['cond_accuracy'\]"):
        ClipJudge(path, smooth_images(4, seed=0), metrics=("fid", "cond_accuracy"))


# -------------------------------------------------------------------------- CLIP score
def test_clip_score_is_the_mean_of_per_image_clamped_cosines(clip):
    path, _ = clip
    model, processor = load_clip(path)
    x, arrays = quantised(smooth_images(8, seed=5))
    prompts = ("a b", "c", "d e f", "g h", "a", "b c d e", "f g", "h a b")
    judge = ClipJudge(path, None, metrics=("clip_score",))
    got = judge.score(x, Conditions(n=8, prompts=prompts))
    assert set(got) == {"clip_score"} and np.isfinite(got["clip_score"])
    # by hand: CLIP's own image and text features, 100 · max(cos, 0), then the mean
    pixels = processor.image_processor(images=arrays, return_tensors="pt")["pixel_values"]
    tok = processor.tokenizer(list(prompts), padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**tok).pooler_output
    cos = F.cosine_similarity(img.double(), txt.double(), dim=-1)
    assert (cos < 0).any() and (cos > 0).any()  # so clamping per image matters here
    want = float((100 * cos.clamp(min=0)).mean())
    assert got["clip_score"] == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert want != pytest.approx(max(float(100 * cos.mean()), 0.0))  # not the clamped mean


def test_clip_score_needs_prompts_one_per_image(clip):
    path, _ = clip
    x = smooth_images(3, seed=6)
    judge = ClipJudge(path, x, metrics=("fid", "clip_score"))
    with pytest.raises(ConfigError, match=r"clip_score needs the caption text.*prompts=\["):
        judge.score(x, Conditions(n=3))
    with pytest.raises(ConfigError, match="2 prompts for 3 images"):
        judge.score(x, Conditions(n=3, prompts=("a", "b")))
    both = judge.score(x, Conditions(n=3, prompts=("a", "b", "c")))
    assert set(both) == {"fid", "clip_score"} and abs(both["fid"]) < 1e-3


# ---------------------------------------------------------------- image-folder support
def write_images(root: Path, n: int = 6) -> list[str]:
    """`n` small RGB PNG images (one in a subfolder); their sorted names."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"sub/img{i}.png" if i == n - 1 else f"img{i}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    return sorted(names)


def test_caption_prompts_round_trip_reorder_by_name_and_reach_conditions(tmp_path: Path):
    root = tmp_path / "images"
    names = write_images(root)
    n = len(names)
    # row i holds the value i and the prompt "p i": a context tells which row it is
    emb = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 3, 8).contiguous()
    prompts = [f"p {i}" for i in range(n)]
    aligned = ImageFolderDenoising(
        CTX_IO,
        root,
        captions=save_caption_embeddings(tmp_path / "a.safetensors", emb, prompts=prompts),
        val_fraction=0.34,
    )
    assert aligned.prompts == tuple(prompts)
    named = ImageFolderDenoising(
        CTX_IO,
        root,
        captions=save_caption_embeddings(
            tmp_path / "n.safetensors", emb.flip(0), names[::-1], prompts[::-1]
        ),
        val_fraction=0.34,
    )
    assert named.prompts == tuple(prompts)  # reordered with the rows, by name
    cond = named.conditions(5)  # more than the 2 held-out rows: cycled
    rows = cond.context[:, 0, 0].long().tolist()
    assert cond.n == 5 and cond.prompts == tuple(f"p {r}" for r in rows)
    assert rows == named.heldout_index[torch.arange(5) % 2].tolist()
    plain = ImageFolderDenoising(
        CTX_IO, root, captions=save_caption_embeddings(tmp_path / "e.safetensors", emb)
    )
    assert plain.prompts is None and plain.conditions(3).prompts is None


def test_caption_prompts_are_checked(tmp_path: Path):
    root = tmp_path / "images"
    write_images(root)
    emb = torch.zeros(6, 3, 8)
    with pytest.raises(ConfigError, match="5 prompts for 6 embedding rows"):
        save_caption_embeddings(tmp_path / "x.safetensors", emb, prompts=["a"] * 5)
    with pytest.raises(ConfigError, match="list of strings"):
        save_caption_embeddings(tmp_path / "x.safetensors", emb, prompts="abcdef")
    save_file({"embeddings": emb}, str(tmp_path / "bad.safetensors"), {"prompts": '["a", 2]'})
    with pytest.raises(ConfigError, match=r"bad\.safetensors.*'prompts'.*6 strings"):
        ImageFolderDenoising(CTX_IO, root, captions=tmp_path / "bad.safetensors")


def test_latent_task_decodes_to_pixels_and_keeps_the_heldout_pixels(tmp_path: Path):
    root = tmp_path / "images"
    names = write_images(root)
    vae = tiny_vae(scaling_factor=0.7, shift_factor=0.3)
    task = ImageFolderDenoising(
        DenoiserIO(1, 8, None, None), root, vae=vae, val_fraction=0.34, encode_batch_size=2
    )
    pixels = load_images(root, names, 3, 16)  # (6, 3, 16, 16): what the VAE encoded
    torch.testing.assert_close(task.reference_images(), pixels[task.heldout_index])
    z = task.split("val")["x0"]  # (2, 1, 8, 8) = (mean − shift) · scale
    out = task.to_pixels(z)
    assert out.shape == (2, 3, 16, 16) and float(out.abs().max()) <= 1.0
    with torch.no_grad():
        mean = vae.encode(pixels[task.val_index]).latent_dist.mean
        want = vae.decode(mean).sample.clamp(-1, 1)  # z / scale + shift is the mean again
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
    g = torch.Generator().manual_seed(0)
    noise = 3 * torch.randn((5, 1, 8, 8), generator=g)  # decoded in batches of 2
    wide = task.to_pixels(noise)
    assert wide.shape == (5, 3, 16, 16) and float(wide.abs().max()) <= 1.0
    torch.testing.assert_close(wide[4:], task.to_pixels(noise[4:]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(task.reference_images(), task.to_pixels(task.split("val")["x0"]))
    # a pixel-space task: identity, and the reference is its own held-out data
    flat = ImageFolderDenoising(DenoiserIO(3, 16, None, None), root, val_fraction=0.34)
    assert flat.vae is None and torch.equal(flat.to_pixels(pixels), pixels)
    torch.testing.assert_close(flat.reference_images(), pixels[flat.heldout_index])
