"""Signal vs noise of the quality metrics: which one should steer the search?

A search ranks architectures by a metric measured after a short fine-tune. If the
metric moves more between fine-tune seeds of one architecture than between
architectures, the ranking is noise. This bench measures that on the default
experiment (`experiments/unet_digits.yaml`), with the pipeline's own functions:

1. the experiment's supernet, trained at full length (`build`, `train_supernet` into a
   throw-away `RunDir`);
2. `--archs` architectures drawn uniformly from the space within the experiment's
   budgets (seeded, distinct): the candidates a search ranks;
3. per architecture and fine-tune budget (`--steps`, default: the experiment's
   ``search.finetune.steps`` and a 5× longer one) and fine-tune seed (`--seeds`): the
   experiment's `FinetuneEvaluator` (extract, QAT fine-tune with that seed, validate)
   with the experiment's `QualityScorer` (``quality:`` settings; the sampling noise is
   the same for every architecture and seed, so the seed only changes the fine-tune);
   metrics ``val_loss``, ``cond_accuracy`` and ``fid``.

Per budget and metric it reports: the seed noise (the mean over architectures of the
std over seeds), the spread between architectures (the std over architectures of the
seed means), their ratio (signal-to-noise: above 1 the architectures differ by more
than a reseeded fine-tune does), the mean Kendall τ between the architecture rankings
of two seeds (how reproducible a ranking by that metric is), and the Kendall τ between
metrics (on seed means, each oriented so that higher τ means agreement on "better").
``recommended`` is the metric with the highest signal-to-noise at the experiment's own
budget. Prints one JSON object and writes it to --out.

    OMP_NUM_THREADS=1 .venv/bin/python bench/quality_signal.py [--archs 12] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
from record import publish

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"val_loss": "min", "cond_accuracy": "max", "fid": "min"}

log = logging.getLogger("quality_signal")


def draw_archs(space, cost, budgets: dict[str, float], n: int, seed: int) -> list[dict]:
    """`n` distinct canonical uniform samples within `budgets`."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    while len(out) < n:
        cands = [dict(space.canonical(space.sample(rng))) for _ in range(64)]
        c = cost.costs(cands, tuple(budgets)) if budgets else {}
        for i, s in enumerate(cands):
            ok = all(float(c[k][i]) <= v for k, v in budgets.items())
            h = space.freeze(s).hash
            if ok and h not in seen and len(out) < n:
                seen.add(h)
                out.append(s)
    return out


def signal(values: np.ndarray) -> dict[str, float]:
    """values (archs, seeds) → seed noise, arch spread, their ratio, seed-pair τ."""
    from scipy.stats import kendalltau

    noise = float(values.std(axis=1, ddof=1).mean())
    spread = float(values.mean(axis=1).std(ddof=1))
    taus = [
        kendalltau(values[:, a], values[:, b]).statistic
        for a, b in itertools.combinations(range(values.shape[1]), 2)
    ]
    return {
        "seed_std": noise,
        "arch_spread": spread,
        "signal_to_noise": spread / noise if noise > 0 else float("inf"),
        "seed_pair_kendall_tau": float(np.nanmean(taus)),
        "mean": float(values.mean()),
    }


def between(means: dict[str, np.ndarray]) -> dict[str, float]:
    """Kendall τ between metrics' arch rankings, oriented so agreement on better is +."""
    from scipy.stats import kendalltau

    sign = {k: 1.0 if d == "max" else -1.0 for k, d in METRICS.items()}
    out = {}
    for a, b in itertools.combinations(means, 2):
        tau = kendalltau(sign[a] * means[a], sign[b] * means[b]).statistic
        out[f"{a}~{b}"] = float(tau)
    return out


def run(experiment: str, n_archs: int, seeds: list[int], steps: list[int] | None) -> dict:
    import torch

    from nas.app.build import build, quality_scorer
    from nas.app.pipeline import train_supernet
    from nas.config import load_config
    from nas.evaluators import FinetuneEvaluator
    from nas.runs import RunDir

    cfg = load_config(experiment)
    ft = cfg.search.finetune
    steps = steps or [ft.steps, 5 * ft.steps]
    t0 = time.perf_counter()
    built = build(cfg, progress=False)
    with tempfile.TemporaryDirectory(prefix="mqnas-quality-") as tmp:
        train_supernet(cfg, RunDir.create(cfg, root=tmp), built.supernet, built.task, False)
    supernet_s = time.perf_counter() - t0
    archs = draw_archs(built.space, built.cost_model, dict(cfg.budgets), n_archs, seed=1234)
    scorer = quality_scorer(cfg, built.task, ["cond_accuracy", "fid"])
    rows: list[dict[str, Any]] = []
    total = len(steps) * len(archs) * len(seeds)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="fine-tune + judge", unit="run")
    for n_steps in steps:
        for i, arch in enumerate(archs):
            for seed in seeds:
                ev = FinetuneEvaluator(
                    built.supernet,
                    built.task,
                    None,
                    scorer,
                    steps=n_steps,
                    batch_size=ft.batch_size,
                    lr=ft.lr,
                    seed=seed,
                )
                t = time.perf_counter()
                trial = ev.evaluate(arch)
                if trial.state != "completed":
                    raise RuntimeError(f"arch {i} seed {seed} failed: {trial.error}")
                rows.append(
                    {
                        "steps": n_steps,
                        "arch": i,
                        "hash": built.space.freeze(arch).hash,
                        "seed": seed,
                        **{k: float(trial.metrics[k]) for k in METRICS},
                        "seconds": time.perf_counter() - t,
                    }
                )
                bar.update()
    bar.close()

    by_budget = {}
    for n_steps in steps:
        sel = [r for r in rows if r["steps"] == n_steps]
        per = {
            k: np.array([[r[k] for r in sel if r["arch"] == a] for a in range(len(archs))])
            for k in METRICS
        }
        by_budget[str(n_steps)] = {
            "metrics": {k: signal(v) for k, v in per.items()},
            "kendall_tau_between_metrics": between({k: v.mean(axis=1) for k, v in per.items()}),
            "seconds_per_run": float(np.mean([r["seconds"] for r in sel])),
        }
    default = by_budget[str(ft.steps)]["metrics"]
    recommended = max(default, key=lambda k: default[k]["signal_to_noise"])
    return {
        "bench": "quality_signal",
        "experiment": str(Path(experiment).relative_to(ROOT))
        if Path(experiment).resolve().is_relative_to(ROOT)
        else experiment,
        "settings": {
            "archs": len(archs),
            "seeds": seeds,
            "finetune_steps": steps,
            "finetune_batch_size": ft.batch_size,
            "supernet_steps": cfg.supernet.steps,
            "quality": cfg.quality.model_dump(),
            "threads": torch.get_num_threads(),
        },
        "by_finetune_steps": by_budget,
        "recommended": recommended,
        "recommended_at_finetune_steps": ft.steps,
        "supernet_seconds": supernet_s,
        "host": platform.node(),
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "unet_digits.yaml"))
    ap.add_argument("--archs", type=int, default=12, help="random archs within the budgets")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="fine-tune budgets")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality_signal.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    doc = run(args.experiment, args.archs, args.seeds, args.steps)
    publish(doc, args.out, quiet=("runs",))


if __name__ == "__main__":
    main()
