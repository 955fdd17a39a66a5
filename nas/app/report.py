"""The end of a run: Pareto front, chosen architecture(s), exports, ``report.md``.

The chosen architecture is the front's best on the first objective (the
accuracy proxy) among completed trials within the budgets; `export.top_k`
exports the k best of the front. The chosen one is measured end to end with
the table's backend, so the report sets its predicted latency beside a real one.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any

import numpy as np

from nas.config import ExperimentConfig
from nas.export import export
from nas.io import write_json
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
    from dataclasses import asdict

    from nas.tasks.base import DenoiserIO

    return {"experiment": cfg.model_dump(mode="json"), "io": asdict(DenoiserIO.of(supernet))}


def measure_arch(
    cfg: ExperimentConfig, entry: SpaceEntry, sample: dict[str, Any], statistic: str
) -> float | None:
    """End-to-end latency (ms) of one architecture with the table's backend and statistic,
    if it runs here (the best of 3 rounds, as `nas latency validate` measures)."""
    from latency_tables.opening import HOST_BACKENDS
    from latency_tables.validate import time_end_to_end
    from nas.app.build import table_source

    if not cfg.export.measure or cfg.latency.backend not in HOST_BACKENDS:
        return None
    spec = entry.space().freeze(sample)
    with table_source(cfg).backend.build() as backend:
        return float(time_end_to_end(entry, backend, [spec], statistic=statistic).min())


def finish_run(
    cfg: ExperimentConfig, run: RunDir, supernet: Supernet, cost, entry: SpaceEntry
) -> dict[str, Any] | None:
    """Front, plot, exports and report of a finished search; the chosen trial's summary."""
    import json

    from nas.pareto import plot_pareto
    from nas.trials import trial_dir

    df = completed_frame(run)
    if len(df) == 0:
        run.report.write_text(f"# {cfg.name}\n\nNo trial completed; see the log.\n")
        return None
    front = choose(df, cfg)
    objectives = dict(cfg.search.objectives)
    chosen_id = str(front.iloc[0]["id"])
    plot_axes = [k for k in objectives if k in df.columns][:2]
    if len(plot_axes) == 2:
        plot_pareto(
            df, {k: objectives[k] for k in plot_axes}, chosen=chosen_id, path=run.pareto_png
        )
    exports = []
    space = entry.space()
    for _, row in front.head(cfg.export.top_k).iterrows():
        sample = json.loads(row["sample"])
        # the same check as `nas export`: ids come from trials.jsonl, which may be crafted
        out = trial_dir(run.export_dir, str(row["id"]), inside=run.path)
        metrics = {k: _num(row.get(k)) for k in ("val_loss", "latency_ms", "params", "bytes")}
        export(supernet, sample, out, metrics={**metrics, **export_context(cfg, supernet)})
        exports.append(
            {
                "trial": str(row["id"]),
                "arch": space.freeze(sample).short(),
                "val_loss": metrics["val_loss"],
                "predicted_latency_ms": metrics["latency_ms"],
                "measured_latency_ms": measure_arch(cfg, entry, sample, cost.table.statistic),
                "params": metrics["params"],
                "bytes": metrics["bytes"],
                "export": str(out),
                "train_command": f"nas train {shlex.quote(str(out))} --steps 1000",
            }
        )
    chosen = exports[0]
    write_json(
        run.summary,
        {
            "experiment": cfg.name,
            "trials": len(df),
            "front": len(front),
            "chosen": chosen,
            "exports": exports,
        },
    )
    run.report.write_text(render_report(cfg, run, df, front, exports))
    return chosen


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec)


def render_report(
    cfg: ExperimentConfig, run: RunDir, df, front, exports: list[dict[str, Any]]
) -> str:
    """``report.md``: the run's settings, the chosen architecture, exports and the front."""
    from nas.app.build import table_source

    chosen = exports[0]
    cols = [c for c in ("val_loss", "latency_ms", "params", "bytes") if c in front.columns]
    search = f"`{cfg.search.strategy}` ({cfg.search.kind})"
    lines = [
        f"# {cfg.name}: search report",
        "",
        f"- space: `{cfg.space}`; strategy: {search}; evaluator: `{cfg.search.evaluator}`",
        f"- latency table: `{cfg.latency.backend}` on `{table_source(cfg).device}`",
        f"- budgets: {dict(cfg.budgets) or 'none'}; objectives: {dict(cfg.search.objectives)}",
        f"- completed trials: {len(df)}; Pareto front: {len(front)}",
        "",
        "## Chosen architecture",
        "",
        f"- trial `{chosen['trial']}`: `{chosen['arch']}`",
        f"- validation loss: {_fmt(chosen['val_loss'])}",
        (
            f"- latency: predicted {_fmt(chosen['predicted_latency_ms'], '.3f')} ms, "
            f"measured end to end {_fmt(chosen['measured_latency_ms'], '.3f')} ms"
        ),
        f"- params: {_fmt(chosen['params'], ',.0f')}; bytes: {_fmt(chosen['bytes'], ',.0f')}",
        f"- exported to `{chosen['export']}`",
        f"- continue training: `{chosen['train_command']}`",
        "",
        "## Exported architectures",
        "",
        "| trial | val_loss | predicted ms | measured ms | params | export |",
        "|---|---|---|---|---|---|",
    ]
    for e in exports:
        lines.append(
            f"| `{e['trial']}` | {_fmt(e['val_loss'])} | {_fmt(e['predicted_latency_ms'], '.3f')}"
            f" | {_fmt(e['measured_latency_ms'], '.3f')} | {_fmt(e['params'], ',.0f')} | "
            f"`{e['export']}` |"
        )
    lines += [
        "",
        "## Pareto front",
        "",
        "![pareto](pareto.png)",
        "",
        "| trial | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for _, row in front.iterrows():
        vals = " | ".join(_fmt(_num(row.get(c))) for c in cols)
        lines.append(f"| `{row['id']}` | {vals} |")
    lines += ["", f"Trials: `{run.path / 'trials.parquet'}` (`nas.load_run`).", ""]
    return "\n".join(lines)
