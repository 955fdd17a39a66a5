"""`nas search`, `nas export`, `nas train`: the main job and the hand-off to training.

nas search EXPERIMENT.yaml [--dry-run] [--ray-address HOST:PORT] [--workers N]
nas search --resume RUN [--workers N]
nas export RUN --trial ID [--out DIR]
nas train EXPORT_DIR [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from nas.errors import ConfigError
from nas.io import share
from nas.layout import TRAIN_HISTORY
from nas.runs import shown

log = logging.getLogger("nas")


def cmd_search(args: argparse.Namespace) -> int:
    from nas.app.pipeline import run_search
    from nas.app.report import fmt
    from nas.config import load_config, with_workers
    from nas.runs import RunDir

    if args.resume:
        run = RunDir.open(args.resume)
        cfg = run.config()
    elif args.experiment:
        cfg, run = load_config(args.experiment), None
    else:
        raise ConfigError("nas search needs an experiment YAML, or --resume RUN")
    if args.workers is not None:
        cfg = with_workers(cfg, args.workers)
    if args.dry_run:
        return dry_run(cfg)
    result = run_search(
        cfg,
        run=run,
        ray_address=args.ray_address,
        progress=not args.quiet,
        retry_failed=args.retry_failed,
    )
    out = sys.stdout
    out.write(
        f"\nrun: {shown(result.run.path)}  ({result.trials} trials, {result.seconds:.0f} s)\n"
    )
    c = result.chosen
    if c is None:
        out.write("no trial completed\n")
        return 1
    rows = [
        ("trial", c.trial),
        ("arch", c.arch),
        ("val_loss", fmt(c.val_loss, ".4f")),
        ("latency predicted (ms)", fmt(c.predicted_latency_ms, ".3f")),
        ("latency measured (ms)", fmt(c.measured_latency_ms, ".3f")),
        ("params", fmt(c.params, ",.0f")),
        ("bytes", fmt(c.bytes, ",.0f")),
        ("export", shown(c.export)),
        ("continue training", f"nas train {shlex.quote(shown(c.export))} --steps 1000"),
    ]
    for k, v in rows:
        out.write(f"  {k:24s} {v}\n")
    out.write(f"report: {shown(result.run.report)}\n")
    return 0


def dry_run(cfg) -> int:
    """Validate everything that can be checked without weights or training, and estimate."""
    import numpy as np

    from latency_tables.cost import CostModel
    from latency_tables.opening import coverage
    from latency_tables.structure import SpaceStructure
    from nas.app.build import table_source
    from nas.app.spaces import space_entry

    entry = space_entry(cfg.space)
    space = entry.space()
    structure = SpaceStructure(space)
    keys = structure.block_keys()
    source = table_source(cfg)
    csv_path = source.csv_path
    have = len(keys) - len(coverage(structure, source)[1])
    for what, path in (
        ("supernet.teacher", cfg.supernet.teacher),
        ("task.path", cfg.task.path),
        ("task.vae", cfg.task.vae),
    ):
        if path and not Path(path).exists():
            log.warning("%s: %s does not exist yet (needed for a real run)", what, path)
    cost = CostModel(space, None, structure=structure)
    macs = cost.costs([space.max(), *space.sample_many(256, rng=cfg.seed)], ("macs",))["macs"]
    s, f = cfg.supernet, cfg.search.finetune
    # forward + backward ≈ 3 forward passes; 2 FLOPs per MAC
    sandwich = s.steps * s.batch_size * 3 * 2 * (macs[0] + macs[1:].mean() * (1 + s.n_random))
    trials = cfg.search.num_trials * f.steps * f.batch_size * 3 * 2 * macs[1:].mean()
    if cfg.search.evaluator == "supernet":
        trials = 0.0
    out = sys.stdout
    out.write(f"experiment {cfg.name}: space {cfg.space} ({len(space)} labels)\n")
    out.write(f"  space size          {float(space.size):.3g} architectures\n")
    out.write(f"  latency keys        {len(keys)} ({len({k.kind for k in keys})} block kinds)\n")
    out.write(
        f"  table coverage      {have}/{len(keys)} keys in {csv_path}"
        + (
            ""
            if have == len(keys)
            else f"\n  measure with        {source.build_command(cfg.space)}"
        )
        + "\n"
    )
    out.write(f"  MACs per sample     max {macs[0]:.3g}, random mean {np.mean(macs[1:]):.3g}\n")
    total = sandwich + trials
    out.write(
        f"  estimated compute   supernet {sandwich / 1e15:.3g} PFLOP + trials "
        f"{trials / 1e15:.3g} PFLOP = {total / 1e15:.3g} PFLOP "
        f"(≈ {total / 1e14 / 3600:.3g} h at 100 TFLOP/s sustained)\n"
    )
    if s.distributed is not None and s.steps > 0:
        out.write(data_parallel_estimate(cfg, entry, sandwich))
    return 0


def data_parallel_estimate(cfg, entry, sandwich_flop: float, measured_steps: int = 2) -> str:
    """The dry run's lines on ``supernet.distributed``: `measured_steps` sandwich steps of
    one worker at the per-worker batch (after one warm-up step), scaled to the run; where
    no step can run here (no such device, no data yet), `sandwich_flop` split evenly.

    Measured on a fresh supernet (the timing does not depend on its weights; no teacher
    loads) on ``device``, with one thread on a CPU, as a Ray worker of one CPU runs. Each
    worker does that step on its own core or GPU, so N workers take about as long per
    step as one worker on 1/N of the batch; the gradient all-reduce comes on top (its
    size is printed).
    """
    import statistics
    from dataclasses import replace

    import torch

    from nas.app.build import build_task, check_device
    from nas.errors import MqnasError
    from nas.training.sandwich import SupernetTrainer

    s = cfg.supernet
    n = s.distributed.num_workers
    per_worker = s.batch_size // n
    threads = torch.get_num_threads()
    try:
        check_device(cfg.device)  # a GPU experiment validated on a laptop: nothing to time
        if torch.device(cfg.device).type == "cpu":
            torch.set_num_threads(1)
        net = entry.supernet(device=cfg.device)
        task = build_task(cfg, net)
        config = replace(
            s.trainer_config(cfg.seed), steps=1 + measured_steps, batch_size=per_worker
        )
        trainer = SupernetTrainer(net, getattr(task, "base", task), config, progress=False)
        quiet = logging.getLogger("nas.training.sandwich")
        level, quiet.level = quiet.level, logging.WARNING  # a probe, not a training to log
        try:
            history = trainer.train()
        finally:
            quiet.setLevel(level)
    except (MqnasError, OSError, RuntimeError) as e:  # e.g. the task's data is not there yet
        hours = sandwich_flop / n / 1e14 / 3600
        return (
            f"  {'data parallel':20s}step not measured here: {e}\n"
            f"  {f'{n} workers':20s}≈ {hours:.3g} h of supernet training at 100 TFLOP/s "
            "sustained per worker (the compute above split evenly)\n"
        )
    finally:
        torch.set_num_threads(threads)
    step = statistics.median(r["seconds"] for r in history[1:])
    grad_mb = sum(p.numel() * p.element_size() for p in net.weight_parameters()) / 2**20
    return (
        f"  {'supernet step':20s}{step:.3g} s on 1 worker at {per_worker} rows (median of "
        f"{measured_steps} measured steps after 1 warm-up, {cfg.device})\n"
        f"  {f'{n} workers':20s}≈ {step:.3g} s/step, {step * s.steps:.3g} s for {s.steps} "
        f"steps at global batch {s.batch_size}, assuming one core or GPU per worker and "
        f"a gradient all-reduce ({grad_mb:.3g} MB a step) that is small next to a step\n"
    )


def cmd_export(args: argparse.Namespace) -> int:
    from nas.app.build import load_trained
    from nas.app.report import export_context
    from nas.export import export
    from nas.runs import RunDir
    from nas.trials import TrialStore, safe_trial_id, trial_dir

    try:
        safe_trial_id(args.trial)
    except ConfigError as e:
        raise ConfigError(f"--trial: {e}; pass an id from the run's trials.jsonl") from None
    run = RunDir.open(args.run)
    cfg = run.config()
    trials = {t.id: t for t in TrialStore(run.path).trials()}  # ids checked as they are read
    if args.trial not in trials:
        some = ", ".join(list(trials)[:5]) or "(none)"
        raise ConfigError(f"run {run.path} has no trial {args.trial!r}; trials: {some} …")
    trial = trials[args.trial]
    if not run.supernet_weights.is_file():
        raise ConfigError(f"run {run.path} has no trained supernet yet; resume it first")
    # the default stays inside the run, however the run directory was made (--out is the
    # user's own choice); checked before the slow supernet load
    out = Path(args.out) if args.out else trial_dir(run.export_dir, trial.id, inside=run.path)
    net = load_trained(cfg, run)
    metrics = {**trial.metrics, **trial.cost, **export_context(cfg, net)}
    export(net, trial.sample, out, metrics=metrics)
    sys.stdout.write(f"{shown(out)}\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nas.app.build import load_export_job
    from nas.io import write_json
    from nas.training.finetune import evaluate_finetuned

    ex, cfg, task = load_export_job(args.export, args.device)
    device = args.device or cfg.device
    model = ex.model
    res = evaluate_finetuned(
        model,
        task,
        steps=args.steps,
        batch_size=args.batch_size or cfg.task.batch_size,
        lr=args.lr,
        seed=cfg.seed,
        device=device,
        progress=True,
    )
    before, after, hist = res.val_loss_before, res.val_loss_after, list(res.history)
    out = Path(args.out) if args.out else Path(args.export) / "trained"
    model.save_pretrained(out, safe_serialization=True)
    for name in ("arch.json", "quant_plan.json"):
        src = Path(args.export) / name
        (out / name).write_text(src.read_text())
    write_json(
        out / TRAIN_HISTORY,
        {"val_loss_before": before, "val_loss_after": after, "history": hist},
    )
    share(out)
    sys.stdout.write(
        f"trained {args.steps} steps: val_loss {before:.4f} → {after:.4f}; saved to {shown(out)}\n"
    )
    return 0


def add_search_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run an experiment (Ray Tune or one-shot)")
    p.add_argument(
        "experiment", nargs="?", help="experiment YAML, e.g. experiments/unet_digits.yaml"
    )
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run directory")
    p.add_argument("--dry-run", action="store_true", help="validate and estimate; run nothing")
    p.add_argument("--ray-address", default=None, help="join a Ray cluster (host:port)")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="data-parallel workers of the supernet training and one-shot search "
        "(supernet.distributed.num_workers); with --resume, continue with another count",
    )
    p.add_argument(
        "--no-retry-failed",
        dest="retry_failed",
        action="store_false",
        help="with --resume: keep failed trials as they are (default: run them again)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("export", help="export a trial of a run as a diffusers model directory")
    p.add_argument("run")
    p.add_argument("--trial", required=True)
    p.add_argument("--out", default=None, help="default: RUN/export/TRIAL")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("train", help="continue training an exported architecture (QAT)")
    p.add_argument("export")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="default: EXPORT/trained")
    p.set_defaults(func=cmd_train)
