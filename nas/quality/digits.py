"""The digits judge: a small classifier that says which digit a generated image shows.

Two metrics come from it, for images generated for classes c (`Conditions.label`):

- ``cond_accuracy``: the share of images generated for class c that the classifier
  calls c — the GenEval idea (Ghosh et al., "GenEval: An Object-Focused Framework for
  Evaluating Text-to-Image Alignment", NeurIPS 2023 D&B): does the image show what
  was asked, judged by a detector/classifier rather than by a loss;
- ``fid``: the Fréchet distance (Heusel et al., "GANs Trained by a Two Time-Scale
  Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017, eq. 6:
  ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)) between the classifier's penultimate
  features of the generated images and of the task's held-out split, computed by
  torchmetrics' `FrechetInceptionDistance` with this classifier as its feature network
  (the Inception network knows nothing of 8×8 digits; a domain classifier's features
  are the usual substitute on small datasets).

The classifier is trained on the task's training split only (never the held-out
rows FID compares with), deterministically (seeded init, batch order and
augmentation), in a few seconds on a CPU, the first time a split is seen; its
weights are cached as safetensors under ``$MQNAS_CACHE_DIR`` (default
``~/.cache/mqnas``), keyed by a hash of the training images, so every trial process
of a run judges with the same weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import Conditions

log = logging.getLogger(__name__)

SIZE = 8  # the digits' native resolution: every image is judged at 8×8
FEATURES = 32  # penultimate width: small, so FID's covariances settle with ~100 samples
EPOCHS = 30
VERSION = 2  # bump when the network or its training changes (a new cache key)


def cache_dir() -> Path:
    """Where trained judges are kept: ``$MQNAS_CACHE_DIR`` or ``~/.cache/mqnas``."""
    root = os.environ.get("MQNAS_CACHE_DIR") or Path.home() / ".cache" / "mqnas"
    return Path(root)


def to_judge_input(images: Tensor) -> Tensor:
    """(n, C, H, W) in [-1, 1] → (n, 1, 8, 8): channel mean, resized (antialiased) to 8×8."""
    x = images.float().mean(dim=1, keepdim=True).clamp(-1, 1)
    if x.shape[-1] != SIZE or x.shape[-2] != SIZE:
        shrink = x.shape[-1] > SIZE
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=shrink)
    return x


class DigitsClassifier(nn.Module):
    """Two convolutions and two linear layers over 8×8 grey digits; `features` is 32-d."""

    num_features = FEATURES  # what torchmetrics' FID reads of a custom feature network

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),  # 8×8 → 4×4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate features (n, 32) of images (n, C, H, W) in [-1, 1]."""
        return self.body(to_judge_input(images))

    def forward(self, images: Tensor) -> Tensor:  # FID calls the module itself
        return self.features(images)

    def logits(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def train_classifier(images: Tensor, labels: Tensor, seed: int = 0) -> DigitsClassifier:
    """Train a `DigitsClassifier` on `images` (n, C, H, W) and `labels` (n,), on the CPU.

    Augmented with a random shift of up to one pixel and a little Gaussian noise per
    batch, so blurry or slightly noisy samples are still read as digits.
    """
    threads = torch.get_num_threads()
    # One intra-op thread: a reduction's order, hence the trained weights, depends on
    # the thread count, and trial processes of one run get different counts.
    torch.set_num_threads(1)
    try:
        return _train(to_judge_input(images.cpu()), labels.cpu().long(), int(seed))
    finally:
        torch.set_num_threads(threads)


def _train(x: Tensor, y: Tensor, seed: int) -> DigitsClassifier:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    net.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(0, x.shape[0], 64):
            idx = perm[s : s + 64]
            dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            xb = xb + 0.1 * torch.randn(xb.shape, generator=g)
            loss = F.cross_entropy(net.head(net.body(xb)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return net.eval()


def _key(images: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256(f"digits-judge-v{VERSION}".encode())
    h.update(to_judge_input(images.cpu()).numpy().tobytes())
    h.update(labels.cpu().long().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_classifier(images: Tensor, labels: Tensor) -> DigitsClassifier:
    """The classifier for this training split: from the cache, or trained and cached."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"digits_classifier-{_key(images, labels)}.safetensors"
    net = DigitsClassifier()
    if path.is_file():
        try:
            net.load_state_dict(load_file(str(path)))
            return net.eval()
        except (
            OSError,
            RuntimeError,
            SafetensorError,
        ) as e:  # a damaged cache entry: train it again
            log.warning("digits judge cache %s is unreadable (%s); retraining", path, e)
    log.info("training the digits judge on %d images (once; cached in %s)", len(labels), path)
    net = train_classifier(images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:  # atomic: trial processes of a run may train the same judge at once
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return net


class DigitsJudge:
    """``cond_accuracy`` and ``fid`` of digits generated for the classes in `Conditions`.

    ``train`` / ``train_labels``: the task's training split (the classifier's data);
    ``reference``: the held-out images FID compares with, all (n, C, H, W) in [-1, 1].
    """

    metric_names = ("cond_accuracy", "fid")

    def __init__(
        self,
        train: Tensor,
        train_labels: Tensor,
        reference: Tensor,
        *,
        metrics: tuple[str, ...] = metric_names,
        device: str | torch.device = "cpu",
    ) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        unknown = sorted(set(metrics) - set(self.metric_names))
        if unknown:
            raise ConfigError(f"the digits judge measures {self.metric_names}, not {unknown}")
        if reference.shape[0] < 2:
            raise ConfigError("fid needs at least 2 held-out images; raise task.val_fraction")
        self.metrics = tuple(metrics)
        self.device = torch.device(device)
        self.classifier = cached_classifier(train, train_labels).to(self.device)
        self.fid = FrechetInceptionDistance(feature=self.classifier, reset_real_features=False).to(
            self.device
        )
        with torch.no_grad():
            self.fid.update(reference.to(self.device), real=True)  # once: kept across resets

    @torch.no_grad()
    def score(self, images: Tensor, cond: Conditions) -> dict[str, float]:
        """The metrics of `images` (n, C, H, W) in [-1, 1] generated for `cond`."""
        if cond.label is None:
            raise ConfigError("the digits judge needs the class each image was generated for")
        x = images.to(self.device)
        out: dict[str, float] = {}
        if "cond_accuracy" in self.metrics:
            pred = self.classifier.logits(x).argmax(dim=1)
            out["cond_accuracy"] = float((pred == cond.label.to(self.device)).float().mean())
        if "fid" in self.metrics:
            self.fid.reset()  # the generated statistics only: the reference stays
            self.fid.update(x, real=False)
            out["fid"] = float(self.fid.compute())
        return out

    @torch.no_grad()
    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """The classifier's accuracy on labelled images (e.g. the held-out split)."""
        pred = self.classifier.logits(images.to(self.device)).argmax(dim=1)
        return float((pred == labels.to(self.device)).float().mean())
