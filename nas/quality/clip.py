"""The CLIP judge of image folders: FID in CLIP image-embedding space and CLIP score.

Two metrics, both from one local CLIP model (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", ICML 2021):

- ``fid``: the Fréchet distance (Heusel et al., "GANs Trained by a Two Time-Scale
  Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017, eq. 6:
  ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)) between Gaussians fitted to the CLIP
  image embeddings of the task's held-out images (r) and of the generated ones (g),
  computed by torchmetrics' `FrechetInceptionDistance` with `ClipImageFeatures` as its
  feature network. CLIP space rather than Inception's, as Kynkäänniemi et al. ("The
  Role of ImageNet Classes in Fréchet Inception Distance", ICLR 2023) recommend: the
  distance then tracks human judgement without leaning on ImageNet classes — and the
  Inception network (torchvision / torch-fidelity) is unavailable beside this torch.
- ``clip_score``: CLIPScore (Hessel et al., "CLIPScore: A Reference-free Evaluation
  Metric for Image Captioning", EMNLP 2021): ``100 · max(cos(E_img, E_txt), 0)`` per
  image against the prompt it was generated for, averaged over the images.

Nothing is downloaded: the model loads from a local directory written by
``CLIPModel.save_pretrained(dir)`` and ``CLIPProcessor.save_pretrained(dir)`` (or a
CLIP tokenizer and image processor saved into it), safetensors weights only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import Conditions

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger(__name__)

KEY = "quality.clip_model"
HOW_TO_SAVE = (
    "save it with CLIPModel.save_pretrained(dir) and CLIPProcessor.save_pretrained(dir) "
    "(safetensors, the default)"
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


# ------------------------------------------------------------------------------ loading
def _check_dir(path: Path) -> None:
    """Refuse a directory `load_clip` cannot read, saying what is missing and the fix."""
    where = f"{KEY}: CLIP directory {str(path)!r}"
    if not path.is_dir():
        raise ConfigError(f"{where} does not exist or is not a directory; {HOW_TO_SAVE}")
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{where} has no config.json (the model's configuration); {HOW_TO_SAVE}")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ConfigError(
            f"{where}: config.json is not a JSON object ({e}); {HOW_TO_SAVE}"
        ) from None
    if model_type != "clip":
        # a text- or vision-only tower (or another family) lacks half of what is judged
        raise ConfigError(
            f"{where} holds a {model_type!r} model, not a full CLIP model (model_type 'clip', "
            f"both towers and projections); {HOW_TO_SAVE}"
        )
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise ConfigError(
                f"{where} holds only pickled weights ({', '.join(pickled)}); pickles run code "
                "when they are loaded, so only safetensors are read: load the model once where "
                "you trust it and re-save it with CLIPModel.save_pretrained(dir), which writes "
                "model.safetensors"
            )
        raise ConfigError(f"{where} has no model weights (model.safetensors); {HOW_TO_SAVE}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"{where} has no tokenizer (tokenizer.json, or vocab.json and merges.txt); "
            "save it with CLIPProcessor.save_pretrained(dir) or CLIPTokenizer.save_pretrained(dir)"
        )
    if not any((path / f).is_file() for f in IMAGE_PROCESSOR_FILES):
        raise ConfigError(
            f"{where} has no image processor configuration (preprocessor_config.json or "
            "processor_config.json); save it with CLIPProcessor.save_pretrained(dir) or "
            "CLIPImageProcessor.save_pretrained(dir)"
        )


def load_clip(path: str | Path) -> tuple[CLIPModel, CLIPProcessor]:
    """The CLIP model (eval mode, no grad) and processor (tokenizer + image processor)
    saved in the local directory `path`; ConfigError naming `quality.clip_model` if not."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(path)
    _check_dir(path)
    errors = (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError)
    try:
        # safetensors only: a pickled checkpoint runs code when it is loaded
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except errors as e:
        raise ConfigError(
            f"{KEY}: cannot load a CLIPModel from {str(path)!r}: {e}; {HOW_TO_SAVE}"
        ) from None
    try:
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    except errors as e:
        raise ConfigError(
            f"{KEY}: cannot load the CLIP tokenizer and image processor from {str(path)!r}: "
            f"{e}; save them with CLIPProcessor.save_pretrained(dir)"
        ) from None
    model.eval().requires_grad_(False)
    log.info("loaded CLIP from %s (embeddings of %d)", path, model.config.projection_dim)
    return model, processor


# ----------------------------------------------------------------------- image features
def _hw(size: Any, what: str) -> tuple[int, int] | int:
    """An image processor size entry → (height, width), or the short side (int)."""
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict):
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        if size.get("shortest_edge"):
            return int(size["shortest_edge"])
    raise ConfigError(f"{KEY}: the image processor's {what} {size!r} is not a size it reads")


def _channels(values: Any, what: str) -> Tensor:
    """image_mean / image_std (a float or one per RGB channel) → (1, 3, 1, 1)."""
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3:
        raise ConfigError(
            f"{KEY}: the image processor's {what} {values!r} is not one per RGB channel"
        )
    return t.reshape(1, 3, 1, 1).clone()


class ClipImageFeatures(nn.Module):
    """Projected CLIP image embeddings (n, D) of images (n, C, H, W) in [-1, 1].

    The preprocessing is the image processor's, on tensors and batched: grey (C = 1)
    repeated to RGB; resized (bicubic, antialiased) so the short side has the
    processor's ``size`` (or to its height × width), centre-cropped to ``crop_size``;
    normalised with ``image_mean`` / ``image_std``. ``num_features`` (D) is what
    torchmetrics' FID reads of a custom feature network.
    """

    def __init__(self, model: CLIPModel, image_processor: Any, batch_size: int = 64) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.batch_size = max(1, int(batch_size))
        self.num_features = int(model.config.projection_dim)
        cfg = image_processor.to_dict()
        self.resize = _hw(cfg.get("size"), "size") if cfg.get("do_resize", True) else None
        crop = _hw(cfg.get("crop_size"), "crop_size") if cfg.get("do_center_crop") else None
        side = int(model.config.vision_config.image_size)
        final = crop if crop is not None else self.resize
        if isinstance(final, int):
            final = (final, final)  # a square input's short side is both sides
        if final != (side, side):
            raise ConfigError(
                f"{KEY}: the image processor makes {final} images, but the CLIP vision tower "
                f"takes {side}×{side}; save the processor that belongs to this model"
            )
        self.crop = crop
        self.side = side
        self._given: tuple[Tensor, Tensor] | None = None
        # not persistent: a judge is rebuilt from the CLIP directory, never from a state dict
        self.register_buffer(
            "mean", _channels(cfg.get("image_mean"), "image_mean"), persistent=False
        )
        self.register_buffer("std", _channels(cfg.get("image_std"), "image_std"), persistent=False)

    def train(self, mode: bool = True) -> ClipImageFeatures:
        # a frozen judge: torchmetrics or a caller toggling train mode must not change it
        return super().train(False)

    def preprocess(self, images: Tensor) -> Tensor:
        """(n, 1|3, H, W) in [-1, 1] → CLIP pixel values (n, 3, side, side), normalised."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(
                f"the CLIP judge scores images (n, 1 or 3, H, W); got {tuple(images.shape)}"
            )
        x = (images.float().clamp(-1, 1) + 1) / 2  # [0, 1], as the processor's rescale
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if isinstance(self.resize, int):  # short side to `resize`, aspect kept
            s = self.resize
            size = (s, max(s, round(s * w / h))) if h <= w else (max(s, round(s * h / w)), s)
        else:
            size = self.resize if self.resize is not None else (h, w)
        if self.crop is not None and (size[0] < self.crop[0] or size[1] < self.crop[1]):
            size = self.crop  # too small to crop: straight to the crop size (no padding)
        if tuple(size) != (h, w):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)  # bicubic overshoots; the processor resizes clamped 8-bit images
        if self.crop is not None:
            top = (x.shape[-2] - self.crop[0]) // 2
            left = (x.shape[-1] - self.crop[1]) // 2
            x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        return (x - self.mean) / self.std

    @contextmanager
    def precomputed(self, images: Tensor, features: Tensor) -> Iterator[None]:
        """Inside the block, calling the module on this very `images` tensor returns
        `features`: the judge embeds generated images once for both FID and CLIP score."""
        self._given = (images, features)
        try:
            yield
        finally:
            self._given = None

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self._given is not None and images is self._given[0]:
            return self._given[1]
        dev = self.mean.device
        dtype = next(self.model.parameters()).dtype
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            pixels = self.preprocess(images[s : s + self.batch_size].to(dev))
            pooled = self.model.vision_model(pixel_values=pixels.to(dtype)).pooler_output
            out.append(self.model.visual_projection(pooled).float())  # (b, D)
        if not out:
            return torch.empty(0, self.num_features, device=dev)
        return torch.cat(out)


# -------------------------------------------------------------------------------- judge
class ClipJudge:
    """``fid`` (CLIP space) and ``clip_score`` of generated images, from a local CLIP.

    ``reference``: the held-out images FID compares with, (N, C, H, W) in [-1, 1]; their
    statistics are computed once, here (needed only for ``fid``).
    """

    metric_names = ("fid", "clip_score")

    def __init__(
        self,
        clip_dir: str | Path,
        reference: Tensor | None,
        *,
        device: str | torch.device = "cpu",
        metrics: Sequence[str] = metric_names,
        batch_size: int = 64,
    ) -> None:
        unknown = sorted(set(metrics) - set(self.metric_names))
        if unknown:
            raise ConfigError(f"the CLIP judge measures {self.metric_names}, not {unknown}")
        self.metrics = tuple(metrics)
        if "fid" in self.metrics and (reference is None or reference.shape[0] < 2):
            raise ConfigError("fid needs at least 2 held-out images; raise task.val_fraction")
        self.device = torch.device(device)
        model, processor = load_clip(clip_dir)
        self.model = model.to(self.device)
        self.tokenizer = processor.tokenizer
        self.batch_size = max(1, int(batch_size))
        self.features = ClipImageFeatures(model, processor.image_processor, batch_size).to(
            self.device
        )
        self.fid = None
        if "fid" in self.metrics and reference is not None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            self.fid = FrechetInceptionDistance(
                feature=self.features, reset_real_features=False
            ).to(self.device)
            with torch.no_grad():  # once: the reference statistics are kept across resets
                self.fid.update(reference, real=True)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> Tensor:
        """Projected CLIP text embeddings (n, D) of `prompts` (truncated to the tower's length)."""
        text_cfg = self.model.config.text_config
        longest = min(int(self.tokenizer.model_max_length), int(text_cfg.max_position_embeddings))
        out = []
        for s in range(0, len(prompts), self.batch_size):
            tok = self.tokenizer(
                list(prompts[s : s + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=longest,
                return_tensors="pt",
            )
            pooled = self.model.text_model(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device),
            ).pooler_output
            out.append(self.model.text_projection(pooled).float())  # (b, D)
        return torch.cat(out)

    @torch.no_grad()
    def score(self, images: Tensor, cond: Conditions) -> dict[str, float]:
        """The metrics of `images` (n, C, H, W) in [-1, 1] generated for `cond`."""
        n = int(images.shape[0])
        prompts = cond.prompts
        if "clip_score" in self.metrics:
            if prompts is None:
                raise ConfigError(
                    "clip_score needs the caption text: write the caption file with "
                    "save_caption_embeddings(..., prompts=[...])"
                )
            if len(prompts) != n:
                raise ConfigError(f"clip_score: {len(prompts)} prompts for {n} images")
        emb = self.features(images)  # (n, D), once for both metrics
        out: dict[str, float] = {}
        if self.fid is not None:
            if n < 2:
                raise ConfigError("fid needs at least 2 generated images; raise quality.samples")
            self.fid.reset()  # the generated statistics only: the reference stays
            with self.features.precomputed(images, emb):
                self.fid.update(images, real=False)
            out["fid"] = float(self.fid.compute())
        if "clip_score" in self.metrics and prompts is not None:
            txt = self.text_features(prompts)  # (n, D)
            cos = (F.normalize(emb, dim=-1) * F.normalize(txt, dim=-1)).sum(dim=-1)  # (n,)
            # per image, then the mean (Hessel et al.); torchmetrics' CLIPScore clamps the
            # mean instead, and takes neither a loaded model's tensors nor transformers 5
            out["clip_score"] = float((100 * cos.clamp(min=0)).mean())
        return out
