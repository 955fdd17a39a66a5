"""The end of a run: Pareto front, chosen architecture(s), exports, ``report.md``.

The chosen architecture is the front's best on the first objective (the
accuracy proxy) among completed trials within the budgets; `export.top_k`
exports the k best of the front. The chosen one is measured end to end with
the table's backend, so the report sets its predicted latency beside a real one.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from nas.config import ExperimentConfig
from nas.export import export
from nas.io import write_json
from nas.layout import PARETO_PLOT, SAMPLES, TRIALS_PARQUET
from nas.runs import RunDir
from nas.supernet import SpaceEntry, Supernet

log = logging.getLogger(__name__)


def completed_frame(run: RunDir):
    from nas.trials import TrialStore

    store = TrialStore(run.path)
    df = store.frame()
    store.snapshot()
    if len(df) == 0:
        return df
    return df[df["state"] == "completed"].reset_index(drop=True)


def choose(df, cfg: ExperimentConfig):
    """The front (objectives of the config) sorted by the first objective."""
    from nas.pareto import pareto_front

    objectives = dict(cfg.search.objectives)
    usable = [k for k in objectives if k in df.columns]
    front = pareto_front(df, {k: objectives[k] for k in usable})
    first = usable[0]
    return front.sort_values(first, ascending=objectives[first] == "min").reset_index(drop=True)


def export_context(cfg: ExperimentConfig, supernet: Supernet) -> dict[str, Any]:
    """What `nas train` needs beside the weights: the experiment and the model's inputs."""
    from nas.tasks.base import DenoiserIO

    return {"experiment": cfg.model_dump(mode="json"), "io": asdict(DenoiserIO.of(supernet))}


MEASURE_ROUNDS = 10  # end-to-end rounds of an exported architecture's check


def measure_arch(
    cfg: ExperimentConfig, entry: SpaceEntry, sample: dict[str, Any], statistic: str
) -> float | None:
    """End-to-end latency (ms) of one architecture with the table's backend and statistic,
    if it runs here: the best of `MEASURE_ROUNDS` rounds pinned to one core at a raised
    priority, as `nas latency validate` measures. (Measured here as the best of 3 unpinned
    rounds right after a search, the default run's chosen arch read 13.7 ms, 1.38× its
    prediction; the best of 15 pinned rounds was 9.7 ms, within 2% of it.)

    None also where the backend cannot convert the whole model (a runtime's partitioner
    can refuse a plan whose blocks it converts one by one): the run keeps its results and
    the report says the figure is missing, with the reason logged.
    """
    from latency_tables.backends.common import ConversionError
    from latency_tables.opening import HOST_BACKENDS
    from latency_tables.quiet import timing_context
    from latency_tables.validate import time_end_to_end
    from nas.app.build import table_source

    if not cfg.export.measure or cfg.latency.backend not in HOST_BACKENDS:
        return None
    spec = entry.space().freeze(sample)
    with table_source(cfg).backend.build() as backend:
        try:
            times = time_end_to_end(
                entry,
                backend,
                [spec],
                statistic=statistic,
                rounds=MEASURE_ROUNDS,
                timing=timing_context(None, -1),
            )
            return float(times.min())
        except ConversionError as e:
            log.warning("end-to-end latency of %s not measured: %s", spec.short(), e)
            return None


@dataclass(frozen=True)
class ExportedArch:
    """One exported architecture of the front, as the report and ``summary.json`` show it."""

    trial: str
    arch: str
    val_loss: float | None
    predicted_latency_ms: float | None
    measured_latency_ms: float | None
    params: float | None
    bytes: float | None
    export: str
    #: the trial's other objective metrics (e.g. ``fid`` when it steers the search)
    scores: dict[str, float | None] = field(default_factory=dict)

    @property
    def train_command(self) -> str:
        return f"nas train {shlex.quote(self.export)} --steps 1000"


@dataclass(frozen=True)
class RunSummary:
    """What a finished search found: everything ``report.md`` and ``summary.json`` show."""

    experiment: str
    space: str
    search: str  # "`strategy` (kind)"
    evaluator: str
    latency_table: str  # "`backend` on `device`"
    budgets: dict[str, float]
    objectives: dict[str, str]
    trials: int
    front: tuple[dict[str, Any], ...]  # id and the objective/cost columns, best first
    exports: tuple[ExportedArch, ...]
    trials_file: str
    samples: str | None = None  # samples.png in the run directory (None: not drawn)
    sample_quality: dict[str, dict[str, float]] | None = None  # panel title → metrics

    @property
    def chosen(self) -> ExportedArch:
        return self.exports[0]

    def to_json(self) -> dict[str, Any]:
        """``summary.json``: the experiment, the counts and the exported architectures."""
        exports = [{**asdict(e), "train_command": e.train_command} for e in self.exports]
        return {
            "experiment": self.experiment,
            "trials": self.trials,
            "front": len(self.front),
            "chosen": exports[0],
            "exports": exports,
            "samples": self.samples,
            "sample_quality": self.sample_quality,
        }


#: The columns of the front that the report tabulates (those the trials have), after the
#: objectives.
FRONT_COLUMNS = ("val_loss", "latency_ms", "params", "bytes")


def front_columns(objectives: dict[str, str]) -> list[str]:
    """The objectives, then the rest of `FRONT_COLUMNS`."""
    return list(dict.fromkeys([*objectives, *FRONT_COLUMNS]))


def finish_run(
    cfg: ExperimentConfig, run: RunDir, supernet: Supernet, cost, entry: SpaceEntry, task
) -> RunSummary | None:
    """Front, plots, exports, ``summary.json`` and ``report.md`` of a finished search."""
    df = completed_frame(run)
    if len(df) == 0:
        run.report.write_text(f"# {cfg.name}\n\nNo trial completed; see the log.\n")
        return None
    summary = summarize(cfg, run, supernet, cost, entry, df)
    if cfg.quality.grid:
        summary = draw_samples(cfg, run, supernet, task, summary, df)
    write_json(run.summary, summary.to_json())
    run.report.write_text(render_report(summary))
    return summary


def draw_samples(
    cfg: ExperimentConfig, run: RunDir, supernet: Supernet, task, summary: RunSummary, df
) -> RunSummary:
    """``samples.png`` of the chosen architecture (and the supernet's max) in `summary`.

    A failure here is logged, not raised: the search's results are written already.
    """
    from nas.app.samples import run_samples

    chosen = summary.chosen
    sample = json.loads(df.loc[df["id"] == chosen.trial, "sample"].iloc[0])
    try:
        quality = run_samples(cfg, run.samples_png, supernet, task, sample, chosen.trial)
    except Exception as e:  # noqa: BLE001  (a picture must not lose a finished search)
        log.warning("samples.png not drawn: %s: %s", type(e).__name__, e)
        return summary
    return replace(summary, samples=SAMPLES, sample_quality=quality)


def summarize(
    cfg: ExperimentConfig, run: RunDir, supernet: Supernet, cost, entry: SpaceEntry, df
) -> RunSummary:
    """Choose, plot and export from the completed trials `df`; the run's `RunSummary`."""
    from nas.app.build import table_source
    from nas.pareto import plot_pareto
    from nas.trials import trial_dir

    front = choose(df, cfg)
    objectives = dict(cfg.search.objectives)
    plot_axes = [k for k in objectives if k in df.columns][:2]
    if len(plot_axes) == 2:
        chosen_id = str(front.iloc[0]["id"])
        plot_pareto(
            df, {k: objectives[k] for k in plot_axes}, chosen=chosen_id, path=run.pareto_png
        )
    exports = []
    space = entry.space()
    for _, row in front.head(cfg.export.top_k).iterrows():
        sample = json.loads(row["sample"])
        # the same check as `nas export`: ids come from trials.jsonl, which may be crafted
        out = trial_dir(run.export_dir, str(row["id"]), inside=run.path)
        metrics = {k: _num(row.get(k)) for k in front_columns(objectives)}
        export(supernet, sample, out, metrics={**metrics, **export_context(cfg, supernet)})
        exports.append(
            ExportedArch(
                trial=str(row["id"]),
                arch=space.freeze(sample).short(),
                val_loss=metrics["val_loss"],
                predicted_latency_ms=metrics["latency_ms"],
                measured_latency_ms=measure_arch(cfg, entry, sample, cost.table.statistic),
                params=metrics["params"],
                bytes=metrics["bytes"],
                export=str(out),
                scores={k: metrics[k] for k in objectives if k not in FRONT_COLUMNS},
            )
        )
    cols = [c for c in front_columns(objectives) if c in front.columns]
    return RunSummary(
        experiment=cfg.name,
        space=cfg.space,
        search=f"`{cfg.search.strategy}` ({cfg.search.kind})",
        evaluator=cfg.search.evaluator,
        latency_table=f"`{cfg.latency.backend}` on `{table_source(cfg).device}`",
        budgets=dict(cfg.budgets),
        objectives=objectives,
        trials=len(df),
        front=tuple(
            {"id": str(row["id"]), **{c: _num(row.get(c)) for c in cols}}
            for _, row in front.iterrows()
        ),
        exports=tuple(exports),
        trials_file=str(run.path / TRIALS_PARQUET),
    )


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def fmt(v: Any, spec: str = ".4g") -> str:
    """`v` formatted with `spec`, or a dash when it is missing."""
    return "—" if v is None else format(v, spec)


def render_report(summary: RunSummary) -> str:
    """``report.md``: the run's settings, the chosen architecture, exports and the front."""
    chosen = summary.chosen
    cols = [c for c in front_columns(summary.objectives) if summary.front and c in summary.front[0]]
    score_cols = list(chosen.scores)
    lines = [
        f"# {summary.experiment}: search report",
        "",
        f"- space: `{summary.space}`; strategy: {summary.search}; evaluator: `{summary.evaluator}`",
        f"- latency table: {summary.latency_table}",
        f"- budgets: {summary.budgets or 'none'}; objectives: {summary.objectives}",
        f"- completed trials: {summary.trials}; Pareto front: {len(summary.front)}",
        "",
        "## Chosen architecture",
        "",
        f"- trial `{chosen.trial}`: `{chosen.arch}`",
        f"- validation loss: {fmt(chosen.val_loss)}",
        *(f"- {k}: {fmt(v)}" for k, v in chosen.scores.items()),
        (
            f"- latency: predicted {fmt(chosen.predicted_latency_ms, '.3f')} ms, "
            f"measured end to end {fmt(chosen.measured_latency_ms, '.3f')} ms"
        ),
        f"- params: {fmt(chosen.params, ',.0f')}; bytes: {fmt(chosen.bytes, ',.0f')}",
        f"- exported to `{chosen.export}`",
        f"- continue training: `{chosen.train_command}`",
        "",
        "## Exported architectures",
        "",
        "| trial | "
        + "".join(f"{k} | " for k in score_cols)
        + "val_loss | predicted ms | measured ms | params | export |",
        "|---|" + "---|" * (len(score_cols) + 5),
    ]
    for e in summary.exports:
        scores = "".join(f"{fmt(e.scores.get(k))} | " for k in score_cols)
        lines.append(
            f"| `{e.trial}` | {scores}{fmt(e.val_loss)} | {fmt(e.predicted_latency_ms, '.3f')}"
            f" | {fmt(e.measured_latency_ms, '.3f')} | {fmt(e.params, ',.0f')} | "
            f"`{e.export}` |"
        )
    if summary.samples:
        lines += ["", "## Samples", "", f"![samples]({summary.samples})", ""]
        for title, metrics in (summary.sample_quality or {}).items():
            shown = ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items()) or "no metrics"
            lines.append(f"- {title}: {shown}")
    lines += [
        "",
        "## Pareto front",
        "",
        f"![pareto]({PARETO_PLOT})",
        "",
        "| trial | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row in summary.front:
        vals = " | ".join(fmt(row.get(c)) for c in cols)
        lines.append(f"| `{row['id']}` | {vals} |")
    lines += ["", f"Trials: `{summary.trials_file}` (`nas.load_run`).", ""]
    return "\n".join(lines)
