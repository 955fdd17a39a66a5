"""What generation-quality metrics are and what they see.

A *judge* scores images a denoiser generated (`nas.quality.sampler.sample`) for a
set of `Conditions` (what was asked: contexts, class labels, prompts). The
metrics it returns are trial metrics like ``val_loss``: recorded on every trial
that asks for them and usable as search objectives. `QUALITY_METRICS` names
each metric, its direction and the tasks it applies to, so a config is checked
before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # annotations only: configs check metric names without torch
    from torch import Tensor

#: Sampler names → their diffusers scheduler classes (all built from a DDPMScheduler config).
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


@dataclass(frozen=True)
class Conditions:
    """What to generate: ``n`` images, each with its context, class label and prompt.

    ``context`` (n, L, D) is what the denoiser's cross-attention sees (None for a model
    without one); ``label`` (n,) the class asked for (class-conditional tasks);
    ``prompts`` the caption text of each image when the task knows it (CLIP score).
    """

    n: int
    context: Tensor | None = None
    label: Tensor | None = None
    prompts: tuple[str, ...] | None = None


class Judge(Protocol):
    """Scores generated images: ``images`` (n, C, H, W) in [-1, 1], pixel space."""

    metric_names: tuple[str, ...]

    def score(self, images: Tensor, cond: Conditions) -> dict[str, float]: ...


@dataclass(frozen=True)
class QualityMetric:
    """A generation-quality metric: its direction and the task kinds that measure it."""

    name: str
    direction: Literal["min", "max"]
    tasks: tuple[str, ...]
    needs: str = ""  # what the config must give for it (shown in errors)
    doc: str = ""


#: Every generation-quality metric, by name.
QUALITY_METRICS: dict[str, QualityMetric] = {
    m.name: m
    for m in (
        QualityMetric(
            "cond_accuracy",
            "max",
            ("digits",),
            doc="share of the images generated for class c that the digits classifier calls c",
        ),
        QualityMetric(
            "fid",
            "min",
            ("digits", "image_folder"),
            needs="image_folder: quality.clip_model (a local CLIP directory)",
            doc="Fréchet distance to the held-out split in the judge's feature space "
            "(digits: the classifier's; image folders: CLIP image embeddings)",
        ),
        QualityMetric(
            "clip_score",
            "max",
            ("image_folder",),
            needs="quality.clip_model and prompts in the caption file",
            doc="CLIP score of each image against its prompt (Hessel et al. 2021)",
        ),
    )
}
