"""Supernet training stability of the default experiment, over seeds.

Trains the supernet of `experiments/unet_digits.yaml` at full length with the
pipeline's own functions (`build_supernet`, `build_task`, `train_supernet` into a
throw-away `RunDir`), once per seed (the experiment's `seed` replaced), and reports
per seed: the final max/min losses (last step, and the mean of the last 10), the
skipped (non-finite) steps, the rollbacks, whether any loss was NaN, the largest
gradient norm (before clipping) and the wall seconds. Prints one JSON object and
writes it to --out (default bench/results/supernet_stability.json).

    OMP_NUM_THREADS=1 .venv/bin/python bench/supernet_stability.py [--seeds 0 1 2 3 4] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
from record import publish

ROOT = Path(__file__).resolve().parents[1]
LAST = 10  # steps averaged for the "final" losses (single steps are noisy at batch 16)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def train_one(experiment: str, seed: int, threads: int) -> dict[str, Any]:
    import torch

    from nas.app.build import build_supernet, build_task
    from nas.app.pipeline import train_supernet
    from nas.app.spaces import space_entry
    from nas.config import load_config
    from nas.runs import RunDir
    from nas.training import latest_checkpoint, read_checkpoint

    torch.set_num_threads(threads)
    cfg = load_config(experiment)
    cfg = cfg.model_copy(update={"seed": seed})
    entry = space_entry(cfg.space)
    with tempfile.TemporaryDirectory(prefix="mqnas-stability-") as tmp:
        run = RunDir.create(cfg, root=tmp)
        t0 = time.perf_counter()
        net = build_supernet(cfg, entry)
        task = build_task(cfg, net)
        hist = train_supernet(cfg, run, net, task, progress=False)
        seconds = time.perf_counter() - t0
        stability = read_checkpoint(latest_checkpoint(run.checkpoints)).state["stability"]
    weights_finite = all(bool(torch.isfinite(v).all()) for v in net.state_dict().values())
    rollbacks = stability["rollbacks"]
    # skipped steps: those kept in the history plus those a rollback discarded
    skipped = [r["step"] for r in hist if r["skipped"]]
    discarded = [s["step"] for e in rollbacks for s in e["skipped"]]
    tail = hist[-LAST:]
    losses = [r[k] for r in hist for k in ("loss_max", "loss_min", "loss_rand")]
    return {
        "seed": seed,
        "steps": len(hist),
        "loss_max_last": hist[-1]["loss_max"],
        "loss_min_last": hist[-1]["loss_min"],
        f"loss_max_mean_last{LAST}": sum(r["loss_max"] for r in tail) / len(tail),
        f"loss_min_mean_last{LAST}": sum(r["loss_min"] for r in tail) / len(tail),
        "loss_max_first": hist[0]["loss_max"],
        "skipped_steps": len(skipped) + len(discarded),
        "skipped_at": sorted(skipped + discarded),
        "rollbacks": len(rollbacks),
        "lr_scale": stability["lr_scale"],
        "any_nan": any(v is not None and not _finite(v) for v in losses) or bool(discarded),
        "weights_finite": weights_finite,
        "grad_norm_max": max(r["grad_norm"] for r in hist if _finite(r["grad_norm"])),
        "grad_norm_median": sorted(r["grad_norm"] for r in hist)[len(hist) // 2],
        "seconds": round(seconds, 1),
        "loss_max_curve": [round(r["loss_max"], 4) for r in hist],
        "loss_min_curve": [round(r["loss_min"], 4) for r in hist],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "unet_digits.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "supernet_stability.json"))
    args = ap.parse_args()

    from nas.config import load_config

    s = load_config(args.experiment).supernet
    t0 = time.perf_counter()
    if args.jobs > 1:
        # spawn: a fresh interpreter per worker (no forked torch thread pools)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(train_one, args.experiment, seed, args.threads) for seed in args.seeds
            ]
            runs = [f.result() for f in futures]
    else:
        runs = [train_one(args.experiment, seed, args.threads) for seed in args.seeds]
    summary = {
        "seeds": len(runs),
        "any_nan": any(r["any_nan"] for r in runs),
        "skipped_steps": sum(r["skipped_steps"] for r in runs),
        "rollbacks": sum(r["rollbacks"] for r in runs),
        f"loss_max_mean_last{LAST}": [round(r[f"loss_max_mean_last{LAST}"], 4) for r in runs],
        f"loss_min_mean_last{LAST}": [round(r[f"loss_min_mean_last{LAST}"], 4) for r in runs],
    }
    out = {
        "bench": "supernet_stability",
        "experiment": str(Path(args.experiment).resolve().relative_to(ROOT))
        if Path(args.experiment).resolve().is_relative_to(ROOT)
        else args.experiment,
        "supernet": s.model_dump(mode="json"),
        "host": {"machine": platform.machine(), "threads": args.threads, "jobs": args.jobs},
        "summary": summary,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    publish(out, args.out)


if __name__ == "__main__":
    main()
