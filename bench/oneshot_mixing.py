"""DQSS one-convolution mixing vs K separate convolutions: speed and output difference.

For conv / linear layers at mobile_unet sizes with the space's K candidate schemes, times
(side by side in one run, alternating, median of repeats) forward+backward of

- ``one_conv``: y = conv(x, Σ_k p_k Q^w_k(W)) — DQSS mixing, inputs float;
- ``k_conv``:   y = Σ_k p_k conv(x, Q^w_k(W)) — K convolutions, inputs float;

and reports the speed ratio and the max |one_conv − k_conv| (equal in exact arithmetic).
With activations mixed too, ``one_conv_acts`` = conv(Σ p Q^a x, Σ p Q^w W) is compared
with ``k_conv_acts`` = Σ_k p_k conv(Q^a_k x, Q^w_k W): not equal (the cross terms of the
product mixture, see `nas.policies.dqss`); the gap is reported, not hidden. Optionally a
whole-supernet step with the DQSS policy vs one fixed scheme. Prints JSON.

    .venv/bin/python bench/oneshot_mixing.py [--batch 8] [--repeats 20] [--supernet mobile_unet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

import search_spaces  # noqa: F401
from nas import SPACES
from nas.policies import DifferentiablePolicy, k_path_forward
from nas.quant import QuantConv2d, QuantLinear
from search_spaces.mobile_unet import DEFAULT_QUANT

# (name, kind, in, out, spatial or tokens) at mobile_unet's max widths (16×16 / 8×8 / 4×4)
LAYERS = (
    ("conv3x3_64_16x16", "conv", 64, 64, 16),
    ("conv3x3_128_8x8", "conv", 128, 128, 8),
    ("conv3x3_192_4x4", "conv", 192, 192, 4),
    ("linear_128_to_1024_64tok", "linear", 128, 1024, 64),
)


def timed(fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> float:
    for p in params:
        p.grad = None
    t0 = time.perf_counter()
    fn().pow(2).mean().backward()
    return time.perf_counter() - t0


def bench_layer(kind: str, cin: int, cout: int, size: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    if kind == "conv":
        layer = QuantConv2d(cin, cout, 3, padding=1, quant=list(DEFAULT_QUANT))
        x = torch.randn(batch, cin, size, size)
    else:
        layer = QuantLinear(cin, cout, quant=list(DEFAULT_QUANT))
        x = torch.randn(batch, size, cin)
    k = len(layer.quant_candidates)
    logits = torch.randn(k, generator=torch.Generator().manual_seed(1), requires_grad=True)
    params = [*layer.parameters(), logits]

    def one(acts: bool) -> torch.Tensor:
        layer.quant_mix, layer.quant_mix_acts = torch.softmax(logits, 0), acts
        try:
            return layer(x)
        finally:
            layer.quant_mix = None

    def kpath(acts: bool) -> torch.Tensor:
        return k_path_forward(layer, x, torch.softmax(logits, 0), acts=acts)

    with torch.no_grad():
        diff_w = float((one(False) - kpath(False)).abs().max())
        diff_a = float((one(True) - kpath(True)).abs().max())
        scale = float(kpath(False).abs().max())
    fns = {
        "one_conv": lambda: one(False),
        "k_conv": lambda: kpath(False),
        "one_conv_acts": lambda: one(True),
        "k_conv_acts": lambda: kpath(True),
    }
    for fn in fns.values():  # warm-up
        timed(fn, params)
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):  # alternate so that machine noise hits all alike
        for n, fn in fns.items():
            times[n].append(timed(fn, params))
    med = {n: statistics.median(t) for n, t in times.items()}
    return {
        "K": k,
        **{f"{n}_ms": round(1e3 * v, 3) for n, v in med.items()},
        "speedup_weights": round(med["k_conv"] / med["one_conv"], 3),
        "speedup_acts": round(med["k_conv_acts"] / med["one_conv_acts"], 3),
        "max_abs_diff_weights": diff_w,
        "max_abs_diff_acts": diff_a,
        "output_max_abs": scale,
    }


def bench_supernet(name: str, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = SPACES.get(name).supernet().train()
    x = net.example_inputs(batch, seed=0)
    fixed = dict(net.space.max(), **{lab: "w8a8:lsq" for lab in net.quant_paths})
    pol = DifferentiablePolicy(net, search=("quant",))

    def step() -> float:
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        net(**x).sample.pow(2).mean().backward()
        return time.perf_counter() - t0

    t_fixed, t_mix = [], []
    for i in range(repeats + 1):
        with net.activate(fixed):
            t = step()
            if i:
                t_fixed.append(t)
        with pol, net.activate(pol.structure_sample()):
            t = step()
            if i:
                t_mix.append(t)
    f, m = statistics.median(t_fixed), statistics.median(t_mix)
    return {
        "space": name,
        "fixed_w8a8_lsq_ms": round(1e3 * f, 2),
        "dqss_mixing_ms": round(1e3 * m, 2),
        "ratio": round(m / f, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--supernet", default="", help="also time a whole supernet step (a space)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers = {
        name: bench_layer(kind, cin, cout, size, args.batch, args.repeats)
        for name, kind, cin, cout, size in LAYERS
    }
    out = {
        "bench": "oneshot_mixing",
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "candidates": list(DEFAULT_QUANT),
        "layers": layers,
    }
    if args.supernet:
        out["supernet"] = bench_supernet(args.supernet, args.batch, max(3, args.repeats // 4))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
