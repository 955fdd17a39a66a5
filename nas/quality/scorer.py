"""Generate, then judge: the quality metrics of one denoiser on its task.

`QualityScorer` asks the task what to generate (`Task.conditions`: every
architecture is asked the same things), samples with the settings' scheduler and
seed (`nas.quality.sampler`), decodes to pixels (`Task.to_pixels`) and hands the
images to the task's judge: the digits classifier (`nas.quality.digits`) or CLIP
(`nas.quality.clip`, image folders).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.quality.base import QUALITY_METRICS, Conditions, Judge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualitySettings:
    """How images are generated for the metrics (the ``quality:`` config section)."""

    samples: int = 100
    steps: int = 20
    scheduler: str = "ddim"
    seed: int = 0
    batch_size: int = 100
    clip_model: str | None = None


def base_task(task):
    """The denoising task under a wrapper (distillation scores its base task's data)."""
    return getattr(task, "base", task)


def check_metrics(names: Sequence[str], task_kind: str, clip_model: str | None, key: str) -> None:
    """Refuse quality metrics the task cannot measure, naming `key` and the fix."""
    for name in names:
        m = QUALITY_METRICS.get(name)
        if m is None:
            raise ConfigError(
                f"{key}: {name!r} is not a quality metric; known: {', '.join(QUALITY_METRICS)}"
            )
        if task_kind not in m.tasks:
            raise ConfigError(
                f"{key}: {name!r} is measured on {' and '.join(m.tasks)} tasks, not on "
                f"task.kind {task_kind!r}; remove it"
            )
        if task_kind == "image_folder" and clip_model is None:
            raise ConfigError(
                f"{key}: {name!r} on an image folder needs quality.clip_model, a local CLIP "
                "directory (CLIPModel.save_pretrained + CLIPProcessor.save_pretrained)"
            )


def available_metrics(task, clip_model: str | None) -> list[str]:
    """The quality metrics `task` can measure as configured (digits: all of its own;
    image folders: CLIP's with a ``clip_model``, ``clip_score`` only with prompts)."""
    task = base_task(task)
    if task.name == "image_folder" and clip_model is None:
        return []
    names = [k for k, m in QUALITY_METRICS.items() if task.name in m.tasks]
    if getattr(task, "prompts", None) is None:
        names = [k for k in names if k != "clip_score"]
    return names


def make_judge(
    task, metrics: Sequence[str], settings: QualitySettings, device: str | torch.device
) -> Judge:
    """The judge of `task` for `metrics` (checked with `check_metrics` first)."""
    task = base_task(task)
    check_metrics(metrics, task.name, settings.clip_model, "quality.metrics")
    if task.name == "digits":
        from nas.quality.digits import DigitsJudge

        train = task.split("train")
        return DigitsJudge(
            train["x0"],
            train["label"],
            task.reference_images(),
            metrics=tuple(metrics),
            device=device,
        )
    from nas.quality.clip import ClipJudge

    return ClipJudge(
        str(settings.clip_model), task.reference_images(), device=device, metrics=tuple(metrics)
    )


class QualityScorer:
    """Generates `settings.samples` images from a model and judges them with `metrics`."""

    def __init__(
        self,
        task,
        metrics: Sequence[str],
        settings: QualitySettings = QualitySettings(),
        device: str | torch.device = "cpu",
    ) -> None:
        self.task = base_task(task)
        self.settings = settings
        self.metrics = tuple(metrics)
        self.cond: Conditions = self.task.conditions(settings.samples)
        self.judge = make_judge(self.task, self.metrics, settings, device) if metrics else None

    def generate(self, model: nn.Module, n: int | None = None, seed: int | None = None) -> Tensor:
        """Images of `model` for the first `n` conditions, in pixel space (n, C, H, W)."""
        from nas.quality.sampler import sample

        s = self.settings
        cond = self.cond if n is None else self.task.conditions(n)
        x = sample(
            model,
            cond,
            self.task.objective,
            self.task.io,
            steps=s.steps,
            scheduler=s.scheduler,
            seed=s.seed if seed is None else seed,
            batch_size=s.batch_size,
        )
        return self.task.to_pixels(x)

    def score(self, model: nn.Module) -> dict[str, float]:
        """The quality metrics of `model` (empty when none were asked for)."""
        if self.judge is None:
            return {}
        return self.judge.score(self.generate(model), self.cond)
