"""Denoising on a dataset held as one tensor: the shared body of the digits and image tasks.

The objective is DDPM's L_simple (Ho et al. 2020, eq. 14; `nas.tasks.diffusion`).
The whole dataset (images or VAE latents, (N, C, H, W)) sits on the device as one
tensor, so a batch is an index. Conditioning is a table of context sequences
(K, L, D) and a row index per sample (N,): a class table (K = 10 for digits) or
one caption embedding per image (K = N) — one representation for both, and no
(N, L, D) copy of a class table.

Validation is deterministic by construction: a fixed split (from ``seed``), fixed
timesteps (`DiffusionObjective.evenly_spaced`), fixed noise (drawn once from a
seeded generator at construction); every validation sample is scored at every
timestep, in fixed chunks, in eval mode under ``torch.no_grad``. The same model
therefore always gets the same ``val_loss``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import Conditions
from nas.tasks.base import Batch, DenoiserIO, Task, denoise
from nas.tasks.diffusion import DiffusionObjective
from nas.tasks.util import eps_part, eval_mode, model_device

log = logging.getLogger(__name__)

# Offsets that give the split, the validation noise and a context table independent
# random streams from one user seed.
SPLIT_SEED = 0
VAL_NOISE_SEED = 1_000_003
CONTEXT_SEED = 2_000_003


def context_table(rows: int, io: DenoiserIO, seed: int) -> Tensor:
    """A fixed (rows, L, D) table of unit-variance Gaussian context sequences.

    It stands in for a frozen text encoder's output: seeded, never learned, so a
    trained or exported model needs no extra module to be conditioned.
    """
    if io.context_len is None or io.context_dim is None:
        raise ConfigError("context_table: the model takes no context (no cross-attention)")
    g = torch.Generator().manual_seed(int(seed) + CONTEXT_SEED)
    return torch.randn(rows, io.context_len, io.context_dim, generator=g)


class DenoisingTask(Task):
    """L_simple on a tensor dataset with a fixed train/validation split.

    ``x0`` (N, C, H, W) must match ``io`` (C, size, size). ``contexts`` (K, L, D) and
    ``context_index`` (N,) give sample i the context ``contexts[context_index[i]]``;
    both are ignored when the model takes no context (``io.context_len is None``).
    ``labels`` (N,) is optional and passed through in batches as ``label``.
    """

    name = "denoising"

    def __init__(
        self,
        io: DenoiserIO,
        x0: Tensor,
        *,
        contexts: Tensor | None = None,
        context_index: Tensor | None = None,
        labels: Tensor | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        val_timesteps: int = 8,
        schedule: str = "linear",
        device: str | torch.device = "cpu",
        val_batch_size: int = 256,
        num_train_timesteps: int = 1000,
        val_images: int | None = None,
    ) -> None:
        self.io = io
        self.seed = int(seed)
        self.device = torch.device(device)
        self.val_batch_size = int(val_batch_size)
        self.objective = DiffusionObjective(num_train_timesteps, schedule)
        want = (io.channels, io.size, io.size)
        if x0.dim() != 4 or tuple(x0.shape[1:]) != want:
            raise ConfigError(
                f"{self.name}: data has shape {tuple(x0.shape)}; the model takes (N, {want[0]}, "
                f"{want[1]}, {want[2]})"
            )
        n = x0.shape[0]
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction}; use a fraction in (0, 1), e.g. 0.1")
        n_val = max(1, round(n * val_fraction))
        if n - n_val < 1:
            raise ConfigError(
                f"{self.name}: {n} samples leave none for training at val_fraction="
                f"{val_fraction}; add data (at least 2 samples) or lower val_fraction"
            )
        if io.context_len is None:
            contexts = context_index = None
        elif contexts is None or context_index is None:
            raise ConfigError(
                f"{self.name}: the model takes a context of shape ({io.context_len}, "
                f"{io.context_dim}) but the task has none"
            )
        else:
            want_ctx = (io.context_len, io.context_dim)
            if contexts.dim() != 3 or tuple(contexts.shape[1:]) != want_ctx:
                raise ConfigError(
                    f"{self.name}: contexts have shape {tuple(contexts.shape)}; the model takes "
                    f"(K, {want_ctx[0]}, {want_ctx[1]})"
                )
            if context_index.shape != (n,):
                raise ConfigError(
                    f"{self.name}: context_index has shape {tuple(context_index.shape)}, "
                    f"expected ({n},)"
                )

        # -- fixed split -------------------------------------------------------------------
        g = torch.Generator().manual_seed(self.seed + SPLIT_SEED)
        perm = torch.randperm(n, generator=g)
        self.val_index = perm[:n_val].sort().values  # (Nv,) rows of the full dataset
        self.heldout_index = self.val_index  # the whole held-out split (generation metrics)
        self.train_index = perm[n_val:].sort().values  # (Nt,)
        if val_images is not None:
            # score fewer held-out images (a cheaper metric); they stay out of training
            self.val_index = self.val_index[: max(1, int(val_images))]
            n_val = int(self.val_index.numel())
        dev = self.device
        self._data: dict[str, Tensor] = {"x0": x0.to(dev, torch.float32)}  # (N, C, H, W)
        if contexts is not None and context_index is not None:
            self._data["contexts"] = contexts.to(dev, torch.float32)  # (K, L, D)
            self._data["context_index"] = context_index.to(dev, torch.long)  # (N,)
        if labels is not None:
            self._data["label"] = labels.to(dev, torch.long)  # (N,)

        # -- fixed validation set: every val sample × every fixed timestep -----------------
        ts = self.objective.evenly_spaced(val_timesteps)  # (K,)
        k = ts.numel()
        rows = self.val_index.repeat(k)  # (K·Nv,) timestep-major
        t = ts.repeat_interleave(n_val)  # (K·Nv,)
        x_val = x0[rows].to(torch.float32)  # (K·Nv, C, H, W), on x0's device
        gv = torch.Generator().manual_seed(self.seed + VAL_NOISE_SEED)
        eps = torch.randn(x_val.shape, generator=gv).to(x_val.device)
        self.val_timesteps = ts
        self._val: dict[str, Tensor] = {
            "x_t": self.objective.add_noise(x_val, eps, t).to(dev),
            "t": t.to(dev),
            "eps": eps.to(dev),
            "rows": rows.to(dev),
        }
        self._moved: dict[tuple[str, torch.device], dict[str, Tensor]] = {}

    # -- data ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._data["x0"].shape[0])

    @property
    def num_train(self) -> int:
        return int(self.train_index.numel())

    @property
    def num_val(self) -> int:
        return int(self.val_index.numel())

    def _on(self, which: str, device: torch.device) -> dict[str, Tensor]:
        """The data (``"data"``) or validation (``"val"``) tensors on `device` (cached)."""
        src = self._data if which == "data" else self._val
        if device == self.device:
            return src
        key = (which, device)
        if key not in self._moved:
            self._moved[key] = {k: v.to(device) for k, v in src.items()}
        return self._moved[key]

    def _batch(self, data: dict[str, Tensor], rows: Tensor) -> Batch:
        """The batch of dataset rows `rows` (B,) (indices on the data's device)."""
        out: Batch = {"x0": data["x0"][rows]}  # (B, C, H, W)
        if "contexts" in data:
            out["context"] = data["contexts"][data["context_index"][rows]]  # (B, L, D)
        if "label" in data:
            out["label"] = data["label"][rows]  # (B,)
        return out

    def split(self, which: str = "train", device: str | torch.device | None = None) -> Batch:
        """The whole ``"train"`` or ``"val"`` split as one batch, in dataset-row order."""
        if which not in ("train", "val"):
            raise ConfigError(f"split {which!r}; use 'train' or 'val'")
        dev = self.device if device is None else torch.device(device)
        rows = self.train_index if which == "train" else self.val_index
        return self._batch(self._on("data", dev), rows.to(dev))

    def batches(
        self, batch_size: int, seed: int, device: str | torch.device = "cpu"
    ) -> Iterator[Batch]:
        """Endless training batches: the train rows reshuffled every epoch from `seed`.

        Batches run across epoch boundaries (a batch larger than the training set is
        allowed), so every batch has exactly `batch_size` samples.
        """
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size}; it must be a positive int")
        dev = torch.device(device)
        data = self._on("data", dev)
        train = self.train_index.to(dev)  # (Nt,)
        g = torch.Generator().manual_seed(int(seed))  # CPU: the same stream on any device
        buf = torch.empty(0, dtype=torch.long)
        while True:
            while buf.numel() < batch_size:
                buf = torch.cat([buf, torch.randperm(self.num_train, generator=g)])
            pos, buf = buf[:batch_size], buf[batch_size:]
            yield self._batch(data, train[pos.to(dev)])

    # -- objective -----------------------------------------------------------------------
    def loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.objective.loss(model, batch, generator)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Mean squared ε error over every validation sample at every fixed timestep."""
        dev = model_device(model, self.device)
        data, val = self._on("data", dev), self._on("val", dev)
        n = val["t"].numel()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        with eval_mode(model):
            for s in range(0, n, self.val_batch_size):
                sl = slice(s, s + self.val_batch_size)
                ctx = None
                if "contexts" in data:
                    ctx = data["contexts"][data["context_index"][val["rows"][sl]]]  # (b, L, D)
                pred = denoise(model, val["x_t"][sl], val["t"][sl], ctx)  # (b, C, H, W)
                eps = val["eps"][sl]
                total += (eps_part(pred, eps.shape[1]).double() - eps.double()).square().sum()
        return {"val_loss": float(total / val["eps"].numel())}

    # -- generation ----------------------------------------------------------------------
    def conditions(self, n: int) -> Conditions:
        """What `n` generated images are asked to show: the held-out rows' contexts (and
        labels), cycled in row order, so every architecture is asked the same things."""
        rows = self.heldout_index[torch.arange(int(n)) % self.heldout_index.numel()]
        b = self._batch(self._data, rows.to(self.device))
        return Conditions(n=int(n), context=b.get("context"), label=b.get("label"))

    def to_pixels(self, x: Tensor) -> Tensor:
        """Model space → images in [-1, 1] (N, C, H, W); pixel-space tasks are the identity."""
        return x

    def reference_images(self) -> Tensor:
        """The held-out split in pixel space (N, C, H, W) in [-1, 1]: FID's real images."""
        return self.to_pixels(self._data["x0"][self.heldout_index.to(self.device)])

    # -- construction --------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module, *args: Any, **kwargs: Any) -> DenoisingTask:
        """The task for `model`'s input shapes (`DenoiserIO.of`), on the model's device."""
        kwargs.setdefault("device", model_device(model))
        return cls(DenoiserIO.of(model), *args, **kwargs)
