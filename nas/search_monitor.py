"""What a person watching a sample-based search sees, and when it gives up: the progress
bar of the trials (done/total, best primary objective, failures, ETA) and the streak of
trials failing with the same error that stops the search (`nas.ray_tune` drives it from
Tune's driver process, once per stored trial)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nas.logs import progress_bar
from nas.trials import Trial

log = logging.getLogger(__name__)


@dataclass
class SearchMonitor:
    """Driver-side view of the search: a progress bar and the failure streak.

    objective: (name, "min" | "max") of the primary objective (the bar's "best").
    max_consecutive_failures: the same error this many times in a row stops the search.
    """

    total: int
    objective: tuple[str, str] = ("val_loss", "min")
    max_consecutive_failures: int = 3
    progress: bool = True
    done: int = 0
    failed: int = 0
    best: float | None = None
    streak: int = 0
    last_error: str | None = None
    _bar: Any = field(default=None, repr=False)

    def start(self, stored: Sequence[Trial]) -> None:
        for t in stored:
            self._count(t)
        self.streak, self.last_error = 0, None  # a new session: only its own failures stop it
        self._bar = progress_bar(
            self.total, initial=self.done, desc="trials", unit="trial", enabled=self.progress
        )
        self._show()

    def _count(self, trial: Trial) -> None:
        self.done += 1
        if trial.state == "failed":
            self.failed += 1
            same = trial.error == self.last_error
            self.streak, self.last_error = (self.streak + 1 if same else 1), trial.error
            return
        self.streak, self.last_error = 0, None
        name, mode = self.objective
        v = {**trial.cost, **trial.metrics}.get(name)
        if trial.state == "completed" and v is not None and math.isfinite(v):
            better = self.best is None or (v < self.best if mode == "min" else v > self.best)
            self.best = v if better else self.best

    def stored(self, trial: Trial) -> None:
        self._count(trial)
        if trial.state == "failed":
            log.warning("trial %s failed: %s", trial.id, trial.error)
        if self._bar is not None:
            self._bar.update(1)
            self._show()

    def _show(self) -> None:
        if self._bar is not None:
            best = "—" if self.best is None else f"{self.best:.4g}"
            self._bar.set_postfix_str(f"best {self.objective[0]}={best}, failed={self.failed}")

    @property
    def tripped(self) -> bool:
        return self.streak >= self.max_consecutive_failures

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
