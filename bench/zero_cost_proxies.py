"""How well zero-cost weak labels rank the 150 measured digits `mobile_unet` architectures.

The strong label is ``finetuned_val_loss`` of `bench/digits_labels.py` (20 QAT steps from
the supernet's weights). Weak labels, each oriented lower = predicted better:

- ``jacov@init``: `nas.zero_cost.JacovProxy` (Mellor et al. 2021, eq. 2) on the supernet at
  its seeded initialisation — zero-cost in the strict sense, no training;
- ``jacov@trained``: the same on the supernet trained with the labels' settings
  (`digits_labels.trained_supernet`, cached under runs/bench/);
- ``supernet_val_loss``: AceNAS' weak label, the supernet's validation loss with
  inherited weights (from the CSV);
- ``-log params``, ``latency_ms``: the cost model's zero-cost proxies (from the CSV).

Per proxy: Spearman ρ and Kendall τ with the strong label over the 150 architectures, and
the seconds per architecture. Prints JSON and writes ``bench/results/zero_cost_proxies.json``.

    .venv/bin/python bench/zero_cost_proxies.py [--batch 32]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, run as a script
import digits_labels as dl
from record import publish

from nas import get_space
from nas.zero_cost import JacovProxy

RESULT = Path(__file__).resolve().parent / "results" / "zero_cost_proxies.json"


def _corr(weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    return {
        "spearman": float(spearmanr(weak, strong).statistic),
        "kendall_tau": float(kendalltau(weak, strong).statistic),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="jacov minibatch")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings, labels = dl.SupernetSettings(), dl.LabelSettings()
    space = get_space(settings.space).space()
    samples, cols = dl.read_labels(dl.LABELS_CSV, space)
    strong = cols[dl.STRONG_COLUMN]
    proxies: dict[str, dict[str, float]] = {}

    def jacov_of(net, name: str) -> None:
        task = dl.make_task(net, labels.val_images, labels.val_timesteps, settings.task_seed)
        proxy = JacovProxy(net, task, batch_size=args.batch, seed=0)
        t0 = time.perf_counter()
        w = proxy(samples, progress=True)
        proxies[name] = {
            **_corr(w, strong),
            "seconds_per_arch": (time.perf_counter() - t0) / len(samples),
        }

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        init = get_space(settings.space).supernet("cpu")
    jacov_of(init, "jacov@init")
    trained, info = dl.trained_supernet(settings)
    jacov_of(trained, "jacov@trained")
    proxies["supernet_val_loss"] = _corr(cols["supernet_val_loss"], strong)
    proxies["-log params"] = _corr(-np.log(cols["params"]), strong)
    proxies["latency_ms"] = _corr(cols["latency_ms"], strong)
    doc = {
        "bench": "zero_cost_proxies",
        "strong_label": dl.STRONG_COLUMN,
        "n_archs": len(samples),
        "orientation": "every weak label lower = predicted better; rho > 0 = agrees",
        "jacov_batch": args.batch,
        "supernet": {"settings": asdict(settings), **info},
        "proxies": proxies,
    }
    publish(doc, args.out)


if __name__ == "__main__":
    main()
