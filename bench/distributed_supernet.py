"""Data-parallel supernet training on this host: sandwich steps/s on 1 vs 2 Ray Train workers.

Trains the supernet of an experiment (default `experiments/unet_digits.yaml`: its space,
task, global batch and sandwich settings) for --steps steps with
`nas.training.distributed.train_supernet_parallel`, on 1 and on 2 workers (gloo, one CPU
each), alternated over --repeats rounds (1, 2, 1, 2, …) so both counts see the same
machine load; plus, in the same rounds, the one-process trainer at one thread (what runs
without `supernet.distributed`). The first --skip steps of every run are warm-up and not
counted. Per configuration: the median seconds per step over the rounds' counted steps,
steps/s, the gradient all-reduce seconds per step (`comm_seconds`, timed around the
collectives by rank 0) and its share of a step. Side by side: the speed-up of 2 workers
over 1 at the same global batch (ideal 2 on two free cores), and the cost of the Ray
Train machinery at 1 worker against the plain trainer. Prints JSON and writes it to --out.

    OMP_NUM_THREADS=1 .venv/bin/python bench/distributed_supernet.py [--steps 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
from record import publish

ROOT = Path(__file__).resolve().parents[1]


def _per_step(history: list[dict[str, Any]], skip: int) -> tuple[list[float], list[float]]:
    """Seconds and all-reduce seconds of the counted steps of one run."""
    counted = history[skip:]
    return [r["seconds"] for r in counted], [r.get("comm_seconds", 0.0) for r in counted]


def _summary(seconds: list[float], comm: list[float], batch: int) -> dict[str, float]:
    step = statistics.median(seconds)
    reduce = statistics.median(comm)
    return {
        "steps_counted": len(seconds),
        "seconds_per_step": round(step, 4),
        "steps_per_second": round(1.0 / step, 3),
        "rows_per_second": round(batch / step, 1),
        "allreduce_seconds_per_step": round(reduce, 5),
        "allreduce_share": round(reduce / step, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "unet_digits.yaml"))
    ap.add_argument("--steps", type=int, default=30, help="sandwich steps per run")
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps of a run not counted")
    ap.add_argument("--repeats", type=int, default=2, help="alternated rounds of every config")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed_supernet.json"))
    args = ap.parse_args()
    if args.steps <= args.skip:
        ap.error(f"--steps {args.steps} must exceed --skip {args.skip}")

    import ray
    import torch

    from nas.app.build import build_supernet, build_task
    from nas.app.spaces import space_entry
    from nas.config import load_config
    from nas.training.distributed import train_supernet_parallel
    from nas.training.sandwich import SupernetTrainer
    from nas.training.settings import DistributedSettings

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # the plain trainer as one Ray worker runs: one core
    cfg = load_config(args.experiment)
    entry = space_entry(cfg.space)
    config = cfg.supernet.trainer_config(cfg.seed)
    config = replace(config, steps=args.steps, val_every=0)
    net0 = build_supernet(cfg, entry)
    task = build_task(cfg, net0)
    base_task = getattr(task, "base", task)
    init = {k: v.clone() for k, v in net0.state_dict().items()}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )

    def fresh():
        net0.load_state_dict(init)
        return net0

    runs: dict[str, tuple[list[float], list[float]]] = {
        "one_process": ([], []),
        "1": ([], []),
        "2": ([], []),
    }
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        hist = SupernetTrainer(fresh(), base_task, config, progress=False).train()
        sec, comm = _per_step(hist, args.skip)
        runs["one_process"][0].extend(sec)
        runs["one_process"][1].extend(comm)
        for n in (1, 2):
            hist = train_supernet_parallel(
                fresh(), base_task, config, DistributedSettings(num_workers=n), progress=False
            )
            sec, comm = _per_step(hist, args.skip)
            runs[str(n)][0].extend(sec)
            runs[str(n)][1].extend(comm)
    ray.shutdown()
    by = {k: _summary(sec, comm, config.batch_size) for k, (sec, comm) in runs.items()}
    grad_mb = sum(p.numel() * p.element_size() for p in net0.weight_parameters()) / 2**20
    out = {
        "bench": "distributed_supernet",
        "experiment": os.path.relpath(args.experiment, ROOT),
        "space": cfg.space,
        "global_batch": config.batch_size,
        "n_random": config.n_random,
        "quant": config.quant,
        "steps_per_run": args.steps,
        "warmup_steps_skipped": args.skip,
        "repeats": args.repeats,
        "gradient_mb_per_allreduce": round(grad_mb, 2),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "by_config": by,
        "speedup_2_over_1_workers": round(
            by["1"]["seconds_per_step"] / by["2"]["seconds_per_step"], 3
        ),
        "ray_1_worker_over_one_process": round(
            by["1"]["seconds_per_step"] / by["one_process"]["seconds_per_step"], 3
        ),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    publish(out, args.out)


if __name__ == "__main__":
    main()
