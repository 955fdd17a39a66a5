"""Tasks: the proxies that score architectures (denoising on digits or an image folder, distillation)."""

from nas.tasks.base import Batch, DenoiserIO, Task, denoise
from nas.tasks.denoising import DenoisingTask, context_table
from nas.tasks.diffusion import SCHEDULES, DiffusionObjective
from nas.tasks.digits import DigitsDenoising
from nas.tasks.distill import DistillationTask
from nas.tasks.image_folder import (
    ImageFolderDenoising,
    load_caption_embeddings,
    save_caption_embeddings,
)

__all__ = [
    "SCHEDULES",
    "Batch",
    "DenoiserIO",
    "DenoisingTask",
    "DiffusionObjective",
    "DigitsDenoising",
    "DistillationTask",
    "ImageFolderDenoising",
    "Task",
    "context_table",
    "denoise",
    "load_caption_embeddings",
    "save_caption_embeddings",
]
