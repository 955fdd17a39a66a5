"""Denoising on the user's own images, in pixel space or in a VAE's latent space.

The objective is DDPM's L_simple (Ho et al. 2020, eq. 14; `nas.tasks.diffusion`);
latent space as in latent diffusion (Rombach et al., CVPR 2022, §3: the denoiser
learns z = E(x) scaled by the VAE's ``scaling_factor``).

Images
    Every ``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp`` / ``.webp`` under ``root`` (also in
    subfolders; hidden files skipped), in the order of their sorted relative POSIX paths.
    Each is converted by PIL to RGB for 3 channels, else to grey (L) repeated to the
    channel count, resized so the short side fits and centre-cropped to a square
    (`PIL.ImageOps.fit`, bicubic), and scaled to [-1, 1].

Latent space (``vae=``)
    A diffusers `AutoencoderKL` directory written by ``save_pretrained`` (a pipeline
    directory's ``vae/`` is found too) or a loaded instance. Images are read at the
    VAE's ``in_channels`` and at ``size × 2^(len(block_out_channels) − 1)`` pixels so
    that the latents have the model's size, encoded once (batched, no grad) and kept:
    ``z = (latent_dist.mean − shift_factor) · scaling_factor`` (``shift_factor`` 0 when
    the config has none, as for SD-1.x). The VAE's ``latent_channels`` must equal the
    model's channels. The VAE is kept (on the task's device) so `to_pixels` decodes
    generated latents, ``x = decode(z / scaling_factor + shift_factor)`` clamped to
    [-1, 1], and the held-out images are kept as read, so `reference_images` gives
    FID the real pixels rather than their VAE reconstructions.

Caption embeddings (``captions=``)
    A safetensors file with one float tensor ``embeddings`` of shape (N, L, D), L and D
    the model's context length and width (e.g. a frozen text encoder's outputs computed
    once). Its rows follow the sorted image paths; or the file's metadata holds
    ``names``, a JSON list of the N relative image paths in row order (rows for images
    that are gone are ignored with a warning). The metadata may also hold ``prompts``,
    a JSON list of the N caption texts in row order (reordered by ``names`` like the
    rows): `conditions` then carries the prompt of each image (for the CLIP score).
    `save_caption_embeddings` writes such a file. Without a caption file a model with
    cross-attention gets one fixed, seeded, unit-variance sequence for every image (the
    stand-in for an empty prompt).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import Conditions
from nas.tasks.base import DenoiserIO
from nas.tasks.denoising import DenoisingTask, context_table
from nas.tasks.util import eval_mode, model_device

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CAPTION_KEY = "embeddings"
NAMES_KEY = "names"
PROMPTS_KEY = "prompts"


def list_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of the images under `root`, sorted; ConfigError if none."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"image folder {str(root)!r} does not exist or is not a directory; give the "
            "directory that holds your training images"
        )
    names = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not names:
        raise ConfigError(
            f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "put at least two images in it"
        )
    return names


def load_images(root: Path, names: Sequence[str], channels: int, size: int) -> Tensor:
    """Images → (N, channels, size, size) float32 in [-1, 1] (RGB for 3, else grey repeated)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    from tqdm.auto import tqdm

    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(names), size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
    for i, name in enumerate(tqdm(names, desc="images", unit="img", disable=len(names) < 256)):
        try:
            with Image.open(root / name) as im:
                im = ImageOps.fit(im.convert(mode), (size, size), method=Image.Resampling.BICUBIC)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(size, size, -1)
        except (OSError, UnidentifiedImageError) as e:
            raise ConfigError(f"cannot read image {str(root / name)!r}: {e}") from None
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 1|3, S, S)
    return x if x.shape[1] == channels else x.repeat(1, channels, 1, 1)


def save_caption_embeddings(
    path: str | Path,
    embeddings: Tensor,
    names: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
) -> Path:
    """Write a caption file `ImageFolderDenoising` reads: ``embeddings`` (N, L, D), and
    optionally the image path (``names``) and caption text (``prompts``) of each row."""
    from safetensors.torch import save_file

    if embeddings.dim() != 3:
        raise ConfigError(f"embeddings must be (N, L, D); got {tuple(embeddings.shape)}")
    if names is not None and len(names) != embeddings.shape[0]:
        raise ConfigError(f"{len(names)} names for {embeddings.shape[0]} embedding rows")
    if prompts is not None:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("prompts must be a list of strings, one caption per row")
        if len(prompts) != embeddings.shape[0]:
            raise ConfigError(f"{len(prompts)} prompts for {embeddings.shape[0]} embedding rows")
    meta: dict[str, str] = {}
    if names is not None:
        meta[NAMES_KEY] = json.dumps(list(names))
    if prompts is not None:
        meta[PROMPTS_KEY] = json.dumps(list(prompts))
    path = Path(path)
    tensors = {CAPTION_KEY: embeddings.detach().float().contiguous().cpu()}
    save_file(tensors, str(path), meta or None)
    return path


@dataclass(frozen=True)
class Captions:
    """A caption file's rows for the images, in their order: embeddings (N, L, D) and,
    when the file has them, the caption texts."""

    embeddings: Tensor
    prompts: tuple[str, ...] | None = None


def load_caption_embeddings(path: str | Path, images: Sequence[str], io: DenoiserIO) -> Tensor:
    """The (N_images, L, D) caption embeddings of `images` (in that order) from `path`."""
    return load_captions(path, images, io).embeddings


def _json_meta(path: Path, meta: dict[str, str], key: str) -> Any:
    """Metadata `key` of a caption file, parsed as JSON."""
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"caption file {str(path)!r}: metadata {key!r} is not JSON ({e})"
        ) from None


def _prompts(path: Path, meta: dict[str, str], rows: int) -> tuple[str, ...] | None:
    """The ``prompts`` metadata of a caption file (one string per row), or None."""
    if PROMPTS_KEY not in meta:
        return None
    prompts = _json_meta(path, meta, PROMPTS_KEY)
    if (
        not isinstance(prompts, list)
        or len(prompts) != rows
        or not all(isinstance(p, str) for p in prompts)
    ):
        raise ConfigError(
            f"caption file {str(path)!r}: metadata {PROMPTS_KEY!r} must be a JSON list of "
            f"{rows} strings (the caption of each row)"
        )
    return tuple(prompts)


def load_captions(path: str | Path, images: Sequence[str], io: DenoiserIO) -> Captions:
    """The caption embeddings (N_images, L, D) and prompts of `images` (in that order)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if io.context_len is None:
        raise ConfigError(
            f"caption file {str(path)!r} given, but the model takes no context (no "
            "cross-attention); drop the captions or search a space with cross-attention"
        )
    want = (len(images), io.context_len, io.context_dim)
    if not path.is_file():
        raise ConfigError(
            f"caption file {str(path)!r} does not exist; write one with "
            f"nas.tasks.save_caption_embeddings (tensor {CAPTION_KEY!r} of shape {want})"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if CAPTION_KEY not in keys:
                raise ConfigError(
                    f"caption file {str(path)!r} has tensors {keys}, not {CAPTION_KEY!r}; store "
                    f"the embeddings under {CAPTION_KEY!r} with shape {want}"
                )
            emb = f.get_tensor(CAPTION_KEY)
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"caption file {str(path)!r} is not a safetensors file: {e}") from None
    if emb.dim() != 3 or tuple(emb.shape[1:]) != want[1:]:
        raise ConfigError(
            f"caption file {str(path)!r}: {CAPTION_KEY!r} has shape {tuple(emb.shape)}; the "
            f"model expects {want} (images, context_len, context_dim)"
        )
    prompts = _prompts(path, meta, int(emb.shape[0]))
    if NAMES_KEY not in meta:
        if emb.shape[0] != len(images):
            raise ConfigError(
                f"caption file {str(path)!r}: {emb.shape[0]} rows for {len(images)} images; the "
                f"rows follow the sorted image paths, so the expected shape is {want} (or add "
                f"metadata {NAMES_KEY!r}: a JSON list of the image path of each row)"
            )
        return Captions(emb.float(), prompts)
    names = _json_meta(path, meta, NAMES_KEY)
    if not isinstance(names, list) or len(names) != emb.shape[0]:
        raise ConfigError(
            f"caption file {str(path)!r}: metadata {NAMES_KEY!r} must be a JSON list of "
            f"{emb.shape[0]} image paths (one per row)"
        )
    row = {str(n): i for i, n in enumerate(names)}
    missing = [n for n in images if n not in row]
    if missing:
        raise ConfigError(
            f"caption file {str(path)!r} has no row for {len(missing)} image(s), e.g. "
            f"{missing[:3]}; add their embeddings or remove the images"
        )
    extra = len(row) - len(images)
    if extra:
        log.warning("caption file %s: %d rows name no image in the folder; ignored", path, extra)
    rows = [row[n] for n in images]
    kept = None if prompts is None else tuple(prompts[i] for i in rows)
    return Captions(emb[torch.tensor(rows)].float(), kept)  # (N_images, L, D)


def load_vae(vae: str | Path | nn.Module) -> tuple[nn.Module, str]:
    """An `AutoencoderKL` from a local directory (or as given) and a name for messages."""
    if isinstance(vae, nn.Module):
        return vae, type(vae).__name__
    path = Path(vae)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vae").is_dir():
        path = path / "vae"  # a pipeline directory
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"VAE directory {str(path)!r} does not exist or has no config.json; give a "
            "directory written by AutoencoderKL.save_pretrained (or a pipeline's vae/)"
        )
    from diffusers import AutoencoderKL

    try:
        # safetensors only: a pickled .bin runs code when it is loaded
        model = AutoencoderKL.from_pretrained(path, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ConfigError(
            f"cannot load an AutoencoderKL from {str(path)!r}: {e}; save it with "
            "AutoencoderKL.save_pretrained(dir)"
        ) from None
    return model, str(path)


@torch.no_grad()
def encode_latents(
    vae: nn.Module, images: Tensor, device: torch.device, batch_size: int = 16
) -> Tensor:
    """z = (latent_dist.mean − shift_factor) · scaling_factor, (N, latent_C, h, w) float32."""
    from tqdm.auto import tqdm

    cfg: Any = vae.config
    scale = float(cfg.scaling_factor)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)
    was = vae.training
    vae.eval()
    dtype = next(vae.parameters()).dtype
    out = []
    try:
        chunks = range(0, images.shape[0], batch_size)
        for s in tqdm(chunks, desc="VAE encode", unit="batch", disable=len(chunks) < 8):
            x = images[s : s + batch_size].to(device, dtype)  # (b, 3, H, W)
            mean = vae.encode(x).latent_dist.mean  # (b, latent_C, H/f, W/f)
            out.append(((mean - shift) * scale).float())
    finally:
        vae.train(was)
    return torch.cat(out)


@torch.no_grad()
def decode_latents(vae: nn.Module, z: Tensor, batch_size: int = 16) -> Tensor:
    """x = decode(z / scaling_factor + shift_factor) clamped to [-1, 1], (N, C, H, W) float32,
    on the VAE's device: the inverse of `encode_latents`."""
    cfg: Any = vae.config
    scale = float(cfg.scaling_factor)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)
    dev = model_device(vae)
    dtype = next(vae.parameters()).dtype
    out = []
    with eval_mode(vae):
        for s in range(0, z.shape[0], batch_size):
            zb = z[s : s + batch_size].to(dev, dtype)  # (b, latent_C, h, w)
            x = vae.decode(zb / scale + shift).sample  # (b, C, H, W)
            out.append(x.float().clamp(-1, 1))
    if not out:
        return torch.empty(0, device=dev)
    return torch.cat(out)


class ImageFolderDenoising(DenoisingTask):
    """DDPM ε-prediction on a folder of images (or their VAE latents), optionally captioned.

    ``image_names`` lists the images in dataset order (sorted relative paths);
    ``prompts`` their caption texts in that order (None when the caption file has none);
    ``vae`` the VAE of a latent task (None in pixel space).
    """

    name = "image_folder"

    def __init__(
        self,
        io: DenoiserIO,
        root: str | Path,
        *,
        captions: str | Path | None = None,
        vae: str | Path | nn.Module | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        val_timesteps: int = 8,
        schedule: str = "linear",
        device: str | torch.device = "cpu",
        encode_batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        self.root = Path(root)
        names = list_images(self.root)
        if len(names) < 2:
            raise ConfigError(
                f"image folder {str(self.root)!r} holds {len(names)} image; at least 2 are "
                "needed (one for training, one for validation)"
            )
        self.image_names = names
        dev = torch.device(device)
        self.vae_name: str | None = None
        self.vae: nn.Module | None = None
        self.decode_batch_size = int(encode_batch_size)
        images: Tensor | None = None  # a latent task's pixel images (the reference)
        if vae is None:
            x0 = load_images(self.root, names, io.channels, io.size)
        else:
            model, self.vae_name = load_vae(vae)
            cfg: Any = model.config
            factor = 2 ** (len(cfg.block_out_channels) - 1)
            pixels = io.size * factor
            if int(cfg.latent_channels) != io.channels:
                raise ConfigError(
                    f"VAE {self.vae_name!r} encodes {cfg.latent_channels}-channel latents at "
                    f"1/{factor} of the image size; the model takes {io.channels} channels at "
                    f"{io.size}×{io.size}: search a space with in_channels="
                    f"{cfg.latent_channels} (images at {pixels}px give {io.size}×{io.size} "
                    f"latents) or use a VAE with latent_channels={io.channels}"
                )
            images = load_images(self.root, names, int(cfg.in_channels), pixels)
            model.to(dev)
            x0 = encode_latents(model, images, dev, encode_batch_size)
            if tuple(x0.shape[1:]) != (io.channels, io.size, io.size):
                raise ConfigError(
                    f"VAE {self.vae_name!r} turned {pixels}px images into latents of shape "
                    f"{tuple(x0.shape[1:])}; the model takes ({io.channels}, {io.size}, "
                    f"{io.size}): use a space whose sample_size is {x0.shape[-1]}"
                )
            log.info("encoded %d images with VAE %s → %s", len(names), self.vae_name, x0.shape)
            self.vae = model  # kept: generated latents are decoded to pixels (`to_pixels`)
        contexts = index = None
        self.prompts: tuple[str, ...] | None = None
        if captions is not None:
            caps = load_captions(captions, names, io)
            contexts, self.prompts = caps.embeddings, caps.prompts  # (N, L, D), N texts
            index = torch.arange(len(names))
        elif io.context_len is not None:
            contexts = context_table(1, io, seed)  # (1, L, D): one "empty prompt" for all
            index = torch.zeros(len(names), dtype=torch.long)
        self.captions = None if captions is None else Path(captions)
        super().__init__(
            io,
            x0,
            contexts=contexts,
            context_index=index,
            val_fraction=val_fraction,
            seed=seed,
            val_timesteps=val_timesteps,
            schedule=schedule,
            device=dev,
            **kwargs,
        )
        # the held-out images as read, not their VAE reconstructions: FID's real images
        self._reference: Tensor | None = None
        if images is not None:
            self._reference = images[self.heldout_index].to(self.device, torch.float32)

    # -- generation ----------------------------------------------------------------------
    def conditions(self, n: int) -> Conditions:
        """The base task's conditions (held-out rows cycled in row order) and, when the
        caption file has them, the prompts of those rows."""
        cond = super().conditions(n)
        if self.prompts is None:
            return cond
        # the rows DenoisingTask.conditions takes
        rows = self.heldout_index[torch.arange(int(n)) % self.heldout_index.numel()]
        return dataclasses.replace(cond, prompts=tuple(self.prompts[i] for i in rows.tolist()))

    def to_pixels(self, x: Tensor) -> Tensor:
        """Model space → images (N, C, H, W) in [-1, 1]: latents decoded by the VAE
        (batched, no grad; returned on `x`'s device), pixels as they are."""
        if self.vae is None:
            return x
        return decode_latents(self.vae, x, self.decode_batch_size).to(x.device)

    def reference_images(self) -> Tensor:
        """The held-out split in pixel space (N, C, H, W) in [-1, 1]: FID's real images."""
        if self._reference is None:
            return super().reference_images()
        return self._reference
