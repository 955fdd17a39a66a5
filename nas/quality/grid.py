"""Labelled PNG grids of generated images, one panel per model.

Class-conditional samples are laid out one row per class, the class on the row's
left, so a reader sees at a glance which classes a model gets right; samples
without labels fill a square grid. Panels sit side by side under their titles
(e.g. the chosen architecture beside the supernet's largest subnet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from nas.errors import ConfigError


@dataclass(frozen=True)
class Panel:
    """One model's samples: ``images`` (n, C, H, W) in [-1, 1], ``labels`` (n,) or None."""

    title: str
    images: Tensor
    labels: Tensor | None = None


def _to_hwc(images: Tensor) -> np.ndarray:
    """(n, C, H, W) in [-1, 1] → (n, H, W, 3) floats in [0, 1] (grey for C ≠ 3)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    if x.shape[1] != 3:  # grey (or a latent's channel mean): the same value in R, G, B
        x = np.repeat(x.mean(axis=1, keepdims=True), 3, axis=1)
    return x.transpose(0, 2, 3, 1)


def _tile(cells: list[list[np.ndarray | None]], h: int, w: int, pad: int = 1) -> np.ndarray:
    """Rows of (H, W, 3) cells (None: blank) → one (rows·(H+pad), cols·(W+pad), 3) image."""
    cols = max(len(r) for r in cells)
    out = np.ones((len(cells) * (h + pad) + pad, cols * (w + pad) + pad, 3))
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell is not None:
                y, x = pad + i * (h + pad), pad + j * (w + pad)
                out[y : y + h, x : x + w] = cell
    return out


def _layout(panel: Panel) -> tuple[np.ndarray, list[str] | None]:
    """The panel's tiled image and its row labels (one per class), or None."""
    imgs = _to_hwc(panel.images)
    n, h, w = imgs.shape[:3]
    if panel.labels is None:
        cols = math.ceil(math.sqrt(n))
        return _tile([list(imgs[r : r + cols]) for r in range(0, n, cols)], h, w), None
    labels = panel.labels.detach().cpu().numpy()
    if labels.shape != (n,):
        raise ConfigError(f"panel {panel.title!r}: {labels.shape} labels for {n} images")
    classes = sorted(set(labels.tolist()))
    rows = [list(imgs[labels == c]) for c in classes]
    return _tile(rows, h, w), [str(c) for c in classes]


def save_grid(panels: Sequence[Panel], path: str | Path, dpi: int = 100) -> Path:
    """Write the panels side by side as a PNG at `path` (parent folders are created)."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: runs headless and in Ray workers
    import matplotlib.pyplot as plt

    if not panels:
        raise ConfigError("save_grid: no panels to draw")
    laid = [_layout(p) for p in panels]
    height = max(img.shape[0] for img, _ in laid)
    widths = [img.shape[1] for img, _ in laid]
    # ~6 screen pixels per image pixel: 16×16 digits stay readable, 64×64 stays moderate
    scale = min(6.0, 1600.0 / max(sum(widths), 1))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(
            max(3.0, sum(widths) * scale / dpi + 0.6 * len(panels)),
            height * scale / dpi + 0.8,
        ),
        dpi=dpi,
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, panel, (img, rows) in zip(axes[0], panels, laid, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        if rows is None:
            ax.set_yticks([])
        else:
            cell = (img.shape[0] - 1) / len(rows)
            ax.set_yticks([cell * (i + 0.5) for i in range(len(rows))], rows, fontsize=8)
            ax.tick_params(axis="y", length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
