"""The run directory of `nas search`: where everything a run writes lives.

``runs/<experiment>/<timestamp>/``, laid out as `nas.layout` names it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from nas.config import ExperimentConfig, dump_config, load_config
from nas.errors import ConfigError
from nas.io import atomic_write_text
from nas.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EXPORT_DIR,
    ONESHOT_TRACE,
    PARETO_PLOT,
    REPORT,
    SAMPLES,
    SUMMARY,
    SUPERNET_WEIGHTS,
)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def supernet_weights(self) -> Path:
        return self.path / SUPERNET_WEIGHTS

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def pareto_png(self) -> Path:
        return self.path / PARETO_PLOT

    @property
    def samples_png(self) -> Path:
        return self.path / SAMPLES

    @property
    def oneshot_trace(self) -> Path:
        return self.path / ONESHOT_TRACE

    def config(self) -> ExperimentConfig:
        return load_config(self.config_file)

    @classmethod
    def create(cls, cfg: ExperimentConfig, root: str | Path | None = None) -> RunDir:
        """A new run directory under ``<runs_dir>/<name>/`` with the resolved config."""
        # absolute: Ray workers and later commands run from other working directories
        base = Path(root or cfg.runs_dir).expanduser().resolve() / cfg.name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, i = base / stamp, 1
        while path.exists():  # two runs in one second
            path, i = base / f"{stamp}-{i}", i + 1
        path.mkdir(parents=True)
        run = cls(path)
        atomic_write_text(run.config_file, dump_config(cfg))
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory (``--resume``, ``nas export``)."""
        p = Path(path).expanduser().resolve()
        if not (p / CONFIG_FILE).is_file():
            raise ConfigError(
                f"{p} is not a run directory (no {CONFIG_FILE}); pass the directory that "
                "`nas search` printed, e.g. runs/<experiment>/<timestamp>"
            )
        return cls(p)


def shown(path: str | Path) -> str:
    """`path` as a user would type it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
