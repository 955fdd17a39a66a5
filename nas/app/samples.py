"""Generated samples: ``samples.png`` of a run, and `nas sample EXPORT_DIR`.

nas sample EXPORT_DIR [--n 64] [--steps 20] [--scheduler ddim] [--out PNG] [--seed S]

A run's grid sets the chosen architecture (its exported, inherited weights)
beside the supernet's largest subnet, both sampled from the same initial noise
and asked for the same classes or captions, each titled with the quality metrics
its task measures (digits: ``cond_accuracy`` and ``fid``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from nas.config import ExperimentConfig
from nas.errors import ConfigError
from nas.layout import SAMPLES
from nas.runs import shown

log = logging.getLogger(__name__)


def grid_metrics(cfg: ExperimentConfig, task) -> list[str]:
    """The quality metrics a grid's titles show: the trials' metrics, else all that the
    task measures as configured (digits: ``cond_accuracy`` and ``fid``)."""
    from nas.app.build import trial_quality_metrics
    from nas.quality.scorer import available_metrics

    return trial_quality_metrics(cfg) or available_metrics(task, cfg.quality.clip_model)


def render_samples(
    cfg: ExperimentConfig,
    task,
    models: Mapping[str, nn.Module],
    path: Path,
    *,
    n: int | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
) -> dict[str, dict[str, float]]:
    """Sample every model of `models` (title → model), judge it, draw the grid at `path`.

    Returns each title's quality metrics, measured on `quality.samples` images as the
    trials' are (so they compare); the grid shows `n` images.
    """
    from nas.app.build import quality_settings
    from nas.quality.grid import Panel, save_grid
    from nas.quality.scorer import QualityScorer

    settings = quality_settings(cfg)
    over = {"steps": steps, "scheduler": scheduler, "seed": seed}
    settings = replace(settings, **{k: v for k, v in over.items() if v is not None})
    scorer = QualityScorer(task, grid_metrics(cfg, task), settings, device=cfg.device)
    n = settings.samples if n is None else int(n)
    if n < 1:
        raise ConfigError(f"--n {n}: a grid needs at least one image")
    # the grid's own draw: a quantized model's dynamic activation ranges see the batch,
    # so the metrics come from the experiment's `quality.samples` images, as the trials'
    labels = scorer.task.conditions(n).label
    panels, scores = [], {}
    for title, model in models.items():
        metrics = scorer.score(model)
        shown_metrics = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        title_line = f"{title}\n{shown_metrics}" if shown_metrics else title
        panels.append(Panel(title_line, scorer.generate(model, n), labels))
        scores[title] = metrics
    save_grid(panels, path)
    log.info("samples: %s", path)
    return scores


def run_samples(
    cfg: ExperimentConfig, path: Path, supernet, task, chosen: Mapping[str, Any], label: str
) -> dict[str, dict[str, float]]:
    """A run's ``samples.png``: the chosen architecture beside the supernet's max subnet."""
    space = supernet.space
    models = {
        f"chosen {label}": supernet.extract(chosen),
        "supernet max subnet": supernet.extract(space.max()),
    }
    return render_samples(cfg, task, models, path)


def cmd_sample(args: argparse.Namespace) -> int:
    from nas.app.build import load_export_job

    ex, cfg, task = load_export_job(args.export, args.device, distill=False)
    if args.device:
        cfg = cfg.model_copy(update={"device": args.device})
    out = Path(args.out) if args.out else Path(args.export) / SAMPLES
    title = f"{Path(args.export).name}: {ex.spec.short()}"
    scores = render_samples(
        cfg,
        task,
        {title: ex.model},
        out,
        n=args.n,
        steps=args.steps,
        scheduler=args.scheduler,
        seed=args.seed,
    )
    for k, v in scores[title].items():
        sys.stdout.write(f"  {k:24s} {v:.4g}\n")
    sys.stdout.write(f"{shown(out)}\n")
    return 0


def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    from nas.quality.base import SCHEDULERS

    p = sub.add_parser("sample", help="generate a labelled PNG grid from an exported model")
    p.add_argument("export", help="an export directory (RUN/export/TRIAL, or its trained/)")
    p.add_argument("--n", type=int, default=64, help="images in the grid (default 64)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: quality.steps)")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=None, help="default: ddim")
    p.add_argument("--seed", type=int, default=None, help="initial noise (default: the run's)")
    p.add_argument("--device", default=None, help="default: the experiment's device")
    p.add_argument("--out", default=None, help=f"default: EXPORT_DIR/{SAMPLES}")
    p.set_defaults(func=cmd_sample)
