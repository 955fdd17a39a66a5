"""Image-folder denoising: pixels, caption embeddings, a real tiny VAE, and clear errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import save_file
from tasks_helpers import supernet

from nas.errors import ConfigError
from nas.tasks import DenoiserIO, ImageFolderDenoising, save_caption_embeddings
from nas.tasks.image_folder import load_images
from nas.testing.models import tiny_vae

UNET_IO = DenoiserIO(channels=1, size=8, context_len=3, context_dim=8)  # test_mobile_unet


def write_images(root: Path, n: int = 6) -> list[str]:
    """`n` small RGB / grey PNG and JPEG images of mixed sizes (one in a subfolder)."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        h, w = (12, 20) if i % 2 else (20, 12)
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        name = f"sub/img{i}.jpg" if i == n - 1 else f"img{i}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(arr)
        (im.convert("L") if i == 0 else im).save(root / name)
        names.append(name)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    return sorted(names)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_images(root)
    return root


def test_pixel_images_are_cropped_resized_and_scaled(tmp_path: Path):
    root = tmp_path / "crop"
    root.mkdir()
    # 24×8 (W×H) image: black | grey 128 | white thirds; the centre crop keeps the grey
    strip = np.concatenate(
        [np.zeros((8, 8)), np.full((8, 8), 128), np.full((8, 8), 255)], axis=1
    ).astype(np.uint8)
    Image.fromarray(strip).save(root / "a.png")
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(root / "b.png")
    grey = ImageFolderDenoising(DenoiserIO(1, 8, None, None), root, val_fraction=0.5)
    assert grey.image_names == ["a.png", "b.png"]
    x = torch.cat([grey.split("train")["x0"], grey.split("val")["x0"]])[
        torch.cat([grey.train_index, grey.val_index]).argsort()
    ]  # (2, 1, 8, 8) in file order
    torch.testing.assert_close(x[0], torch.full((1, 8, 8), 128 / 127.5 - 1))
    rgb = ImageFolderDenoising(DenoiserIO(3, 8, None, None), root, val_fraction=0.5)
    both = {"train": rgb.split("train"), "val": rgb.split("val")}
    red_x = both["train" if 1 in rgb.train_index else "val"]["x0"][0]
    assert torch.equal(red_x[0], torch.ones(8, 8)) and torch.equal(red_x[1], -torch.ones(8, 8))


def test_folder_without_captions_gives_one_fixed_context(folder: Path):
    task = ImageFolderDenoising(UNET_IO, folder, val_fraction=0.34)
    assert task.image_names == write_images(folder.parent / "again")
    assert len(task) == 6 and task.num_val == 2 and task.num_train == 4
    b = next(task.batches(5, seed=0))  # larger than the training split: crosses epochs
    assert b["x0"].shape == (5, 1, 8, 8) and b["context"].shape == (5, 3, 8)
    assert float(b["x0"].min()) >= -1 and float(b["x0"].max()) <= 1
    assert all(torch.equal(b["context"][0], c) for c in b["context"])  # the "empty prompt"
    net = supernet("test_mobile_unet")
    assert task.validate(net) == task.validate(net)
    assert torch.isfinite(task.loss(net, b))


def test_caption_embeddings_follow_sorted_names_or_the_names_metadata(folder: Path, tmp_path):
    names = ImageFolderDenoising(UNET_IO, folder).image_names
    n = len(names)
    # row i of the file is filled with i: a context tells which row it came from
    emb = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 3, 8).contiguous()
    aligned = ImageFolderDenoising(
        UNET_IO, folder, captions=save_caption_embeddings(tmp_path / "aligned.safetensors", emb)
    )
    train = aligned.split("train")
    assert torch.equal(train["context"][:, 0, 0].long(), aligned.train_index)
    # the same rows stored in reverse order, with their names: same contexts
    named = ImageFolderDenoising(
        UNET_IO,
        folder,
        captions=save_caption_embeddings(tmp_path / "named.safetensors", emb.flip(0), names[::-1]),
    )
    assert torch.equal(named.split("train")["context"], train["context"])
    assert torch.equal(named.split("val")["context"], aligned.split("val")["context"])
    # batches carry the caption of their image
    batch = next(named.batches(4, seed=1))
    val = named.split("val")
    assert not any(torch.equal(batch["x0"][0], v) for v in val["x0"])
    assert batch["context"].shape == (4, 3, 8)


def test_caption_file_errors_name_the_file_and_the_expected_shape(folder: Path, tmp_path):
    n = 6
    bad_dim = save_caption_embeddings(tmp_path / "d.safetensors", torch.zeros(n, 3, 5))
    with pytest.raises(ConfigError, match=r"d\.safetensors.*\(6, 3, 8\)"):
        ImageFolderDenoising(UNET_IO, folder, captions=bad_dim)
    bad_n = save_caption_embeddings(tmp_path / "n.safetensors", torch.zeros(n - 1, 3, 8))
    with pytest.raises(ConfigError, match=r"5 rows for 6 images.*\(6, 3, 8\)"):
        ImageFolderDenoising(UNET_IO, folder, captions=bad_n)
    save_file({"emb": torch.zeros(n, 3, 8)}, str(tmp_path / "k.safetensors"))
    with pytest.raises(ConfigError, match=r"k\.safetensors.*'embeddings'"):
        ImageFolderDenoising(UNET_IO, folder, captions=tmp_path / "k.safetensors")
    with pytest.raises(ConfigError, match=r"missing\.safetensors.*does not exist"):
        ImageFolderDenoising(UNET_IO, folder, captions=tmp_path / "missing.safetensors")
    save_file(
        {"embeddings": torch.zeros(2, 3, 8)},
        str(tmp_path / "names.safetensors"),
        {"names": json.dumps(["img1.png", "nope.png"])},
    )
    with pytest.raises(ConfigError, match=r"no row for 5 image"):
        ImageFolderDenoising(UNET_IO, folder, captions=tmp_path / "names.safetensors")
    no_ctx = DenoiserIO(1, 8, None, None)
    with pytest.raises(ConfigError, match="takes no context"):
        ImageFolderDenoising(no_ctx, folder, captions=bad_n)


def test_missing_empty_or_tiny_folders_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nowhere.*does not exist"):
        ImageFolderDenoising(UNET_IO, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"empty.*holds no images"):
        ImageFolderDenoising(UNET_IO, tmp_path / "empty")
    (tmp_path / "one").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "a.png")
    with pytest.raises(ConfigError, match=r"one.*at least 2"):
        ImageFolderDenoising(UNET_IO, tmp_path / "one")
    (tmp_path / "broken").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "broken" / "a.png")
    (tmp_path / "broken" / "b.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"b\.png"):
        ImageFolderDenoising(UNET_IO, tmp_path / "broken")


def test_vae_latents_from_a_saved_pipeline_directory(folder: Path, tmp_path: Path):
    tiny_vae().save_pretrained(tmp_path / "pipe" / "vae")
    task = ImageFolderDenoising.for_model(
        supernet("test_mobile_unet"), folder, vae=tmp_path / "pipe", val_fraction=0.34
    )
    assert task.vae_name == str(tmp_path / "pipe" / "vae")
    vae = AutoencoderKL.from_pretrained(tmp_path / "pipe" / "vae").eval()
    pixels = load_images(folder, task.image_names, 3, 16)  # 16 px → 8×8 latents
    with torch.no_grad():
        z = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # (6, 1, 8, 8)
    torch.testing.assert_close(task.split("train")["x0"], z[task.train_index])
    torch.testing.assert_close(task.split("val")["x0"], z[task.val_index])
    net = supernet("test_mobile_unet")
    loss = task.loss(net, next(task.batches(4, seed=0)), torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss)
    assert task.validate(net) == task.validate(net)


def test_vae_errors_name_the_vae_and_what_would_fit(folder: Path, tmp_path: Path):
    tiny_vae(latent_channels=2).save_pretrained(tmp_path / "vae2")
    with pytest.raises(ConfigError, match=r"vae2.*2-channel.*in_channels=2"):
        ImageFolderDenoising(UNET_IO, folder, vae=tmp_path / "vae2")
    with pytest.raises(ConfigError, match=r"nothing.*config\.json"):
        ImageFolderDenoising(UNET_IO, folder, vae=tmp_path / "nothing")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(
        (tmp_path / "vae2" / "config.json").read_text()
    )
    with pytest.raises(ConfigError, match=r"noweights"):
        ImageFolderDenoising(UNET_IO, folder, vae=tmp_path / "noweights")


def test_batches_of_an_image_folder_are_seeded(folder: Path):
    task = ImageFolderDenoising(UNET_IO, folder, val_fraction=0.34)
    a = list(itertools.islice(task.batches(3, seed=7), 4))
    b = list(itertools.islice(task.batches(3, seed=7), 4))
    assert all(torch.equal(x["x0"], y["x0"]) for x, y in zip(a, b))
