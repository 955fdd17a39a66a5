"""Helpers of the training tests: fresh supernets, trainers from flat keyword arguments,
and a task whose data stream dies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import torch

import nas
import search_spaces  # noqa: F401  (registers the spaces)
from nas.supernet import Supernet
from nas.tasks.base import Batch, Task
from nas.tasks.digits import DigitsDenoising
from nas.training import SupernetTrainer, TrainerConfig

SPACE = "test_mobile_unet"


def make_supernet(seed: int, space: str = SPACE) -> Supernet:
    """A freshly initialised supernet; `seed` fixes its initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nas.get_space(space).supernet("cpu")


_CONFIG_FIELDS = frozenset(f.name for f in fields(TrainerConfig))


def make_trainer(net: Supernet, task: Task, **kw: Any) -> SupernetTrainer:
    """A trainer from one flat dict: TrainerConfig's fields build its config, the rest
    (device, checkpoint_dir, progress, resume, keep_checkpoints) go to the trainer."""
    config = TrainerConfig(**{k: v for k, v in kw.items() if k in _CONFIG_FIELDS})
    options = {k: v for k, v in kw.items() if k not in _CONFIG_FIELDS}
    return SupernetTrainer(net, task, config, **options)


class SimulatedCrash(RuntimeError):
    """Raised by `CrashingTask` where a real job would be killed."""


class CrashingTask(Task):
    """The digits task whose data stream dies after `crash_after` batches (a killed job)."""

    def __init__(self, base: DigitsDenoising, crash_after: int) -> None:
        self.base = base
        self.name = base.name
        self.objective = base.objective
        self.crash_after = crash_after

    def batches(self, batch_size: int, seed: int, device="cpu") -> Iterator[Batch]:
        for i, b in enumerate(self.base.batches(batch_size, seed, device)):
            if i == self.crash_after:
                raise SimulatedCrash(f"data stream killed at batch {i}")
            yield b

    def loss(self, model, batch, generator=None):
        return self.base.loss(model, batch, generator)

    def validate(self, model):
        return self.base.validate(model)
