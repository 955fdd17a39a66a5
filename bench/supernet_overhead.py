"""Forward+backward time of the supernet with a sample active vs its extracted model.

Measured side by side in one run (alternating, median of repeats) for the min,
median and max samples of a space; prints JSON with the ratios. The goal is
≤ 1.2× for the max sample: slicing must cost little next to the convolutions.

    .venv/bin/python bench/supernet_overhead.py [--space mobile_unet] [--batch 8] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import search_spaces  # noqa: F401
from nas import SPACES


def median_sample(space) -> dict:
    return {lab: c.options[(len(c) - 1) // 2] for lab, c in space.items()}


def step_time(model, inputs) -> float:
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    y = model(**inputs)
    out = y.sample if hasattr(y, "sample") else y[0]
    out.float().pow(2).mean().backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobile_unet")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    entry = SPACES.get(args.space)
    net = entry.supernet(args.device).train()
    space = net.space
    inputs = {k: v.to(args.device) for k, v in net.example_inputs(args.batch, seed=0).items()}
    results = {}
    for name, sample in (
        ("min", space.min()),
        ("median", median_sample(space)),
        ("max", space.max()),
    ):
        model = net.extract(sample).train()
        with net.activate(sample):
            for _ in range(args.warmup):
                step_time(net, inputs)
                step_time(model, inputs)
            t_super, t_model = [], []
            for _ in range(args.repeats):  # alternate so that machine noise hits both alike
                t_super.append(step_time(net, inputs))
                t_model.append(step_time(model, inputs))
        s, m = statistics.median(t_super), statistics.median(t_model)
        results[name] = {
            "arch": space.freeze(sample).short(),
            "params_extracted": sum(p.numel() for p in model.parameters()),
            "supernet_ms": round(1e3 * s, 3),
            "extracted_ms": round(1e3 * m, 3),
            "ratio": round(s / m, 3),
        }
    print(
        json.dumps(
            {
                "bench": "supernet_overhead",
                "space": args.space,
                "batch": args.batch,
                "threads": args.threads,
                "device": args.device,
                "repeats": args.repeats,
                "quant": "off",
                "results": results,
                "goal_max_ratio": 1.2,
                "goal_met": results["max"]["ratio"] <= 1.2,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
