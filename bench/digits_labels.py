"""Cached weak and strong labels of the digits `mobile_unet` space (shared by the benches).

The AceNAS protocol (Zhang et al. 2021, "AceNAS: Learning to Rank Ace Neural Architectures
with Weak Supervision of Weight Sharing", §3): a weight-sharing supernet gives cheap *weak*
labels, a short stand-alone training gives the *strong* ones.

1. Supernet: `mobile_unet` trained on `DigitsDenoising` with the sandwich rule and in-place
   distillation (Yu & Huang 2019, Algorithm 1; `nas.training.sandwich`). Its checkpoints
   (safetensors + JSON) live in a gitignored directory (default ``runs/bench/
   digits_supernet``); a rerun resumes or, when done, only loads them.
2. Architectures: `n_archs` uniform samples of the space (seeded, canonical, distinct).
3. Per architecture, on a fixed validation set (`val_images` held-out digits × `val_timesteps`
   evenly spaced timesteps, fixed noise; DDPM ε-MSE, Ho et al. 2020 eq. 14):
   - weak: ``supernet_val_loss`` — validation loss of the supernet's active sub-network
     (inherited weights, fake-quant on), and the table's ``latency_ms``, ``params``, ``macs``, ``bytes`` (`CostModel`);
   - strong: ``finetuned_val_loss`` — the same metric after fine-tuning the extracted model
     `ft_steps` steps (QAT, AdamW, one fixed data/noise seed for every architecture: common
     random numbers, so differences between archs are not sampling noise).

Rows are appended to the CSV as they finish (the sample as a JSON string, its spec hash,
the labels and seconds); a rerun skips the hashes already there, so generation is
resumable and may be stopped at any time. The provenance (settings, supernet checkpoint
hash, date, host) sits in a JSON beside the CSV. Several processes may label into one CSV at
once (`--reverse` walks the list from its end): rows are written under an exclusive lock
and each process skips what is already there. Nothing is pickled.

    .venv/bin/python bench/digits_labels.py [--n 150] [--minutes 35] [--ckpt DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import json
import logging
import platform
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import search_spaces  # noqa: F401  (registers the spaces)
from latency_tables.cost import CostModel
from latency_tables.table import LatencyTable
from nas import get_space
from nas.errors import ConfigError
from nas.quant import set_quant_enabled
from nas.space import SearchSpace
from nas.supernet import Supernet
from nas.tasks.base import DenoiserIO
from nas.tasks.digits import DigitsDenoising
from nas.training import SupernetTrainer, TrainerConfig, finetune, latest_checkpoint
from nas.training.finetune import validate

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "bench" / "data"
LABELS_CSV = DATA_DIR / "mobile_unet_digits_labels.csv"
PROVENANCE_JSON = DATA_DIR / "mobile_unet_digits_labels.json"
DEFAULT_CKPT = ROOT / "runs" / "bench" / "digits_supernet"  # runs/ is gitignored
LATENCY_DEVICE, LATENCY_BACKEND = "cpu-x86_64", "onnxruntime"

WEAK_COLUMNS = ("supernet_val_loss", "latency_ms", "params", "macs", "bytes")
STRONG_COLUMN = "finetuned_val_loss"
CSV_COLUMNS = (
    "index",
    "spec_hash",
    *WEAK_COLUMNS,
    STRONG_COLUMN,
    "finetune_train_loss",
    "seconds_weak",
    "seconds_strong",
    "sample",
)


@dataclass(frozen=True)
class SupernetSettings:
    """The sandwich run whose weights give the weak labels (and the search's truth)."""

    space: str = "mobile_unet"
    steps: int = 150
    batch_size: int = 16
    n_random: int = 2
    lr: float = 1e-3
    seed: int = 0
    task_seed: int = 0  # the digits train/validation split and validation noise


@dataclass(frozen=True)
class LabelSettings:
    """Which architectures are labelled and how (see the module docstring)."""

    n_archs: int = 150
    arch_seed: int = 20_250
    ft_steps: int = 20
    ft_batch_size: int = 8
    ft_lr: float = 1e-3
    ft_seed: int = 0
    val_images: int = 32
    val_timesteps: int = 4


# -- components ---------------------------------------------------------------------------------
def make_task(
    supernet: Supernet, val_images: int, val_timesteps: int, seed: int = 0
) -> DigitsDenoising:
    """The digits task at the supernet's shapes, on its device."""
    dev = next(supernet.parameters()).device
    return DigitsDenoising(
        DenoiserIO.of(supernet),
        val_images=val_images,
        val_timesteps=val_timesteps,
        seed=seed,
        device=dev,
    )


def cost_model(space: SearchSpace) -> CostModel:
    """Latency (shipped onnxruntime CPU table), params, MACs and bytes of `space`."""
    table = LatencyTable.load(ROOT / "latency_tables" / "data", LATENCY_DEVICE, LATENCY_BACKEND)
    return CostModel(space, table)


def trained_supernet(
    settings: SupernetSettings,
    ckpt_dir: str | Path = DEFAULT_CKPT,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Supernet, dict[str, Any]]:
    """The supernet after `settings.steps` sandwich steps: trained (or resumed) into
    `ckpt_dir`, or just loaded when that is done. Returns it (quant on, eval mode) and its
    provenance (step, sha256 of the weights file, last training losses, seconds)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)  # the initial weights (a resumed run loads its own)
        supernet = get_space(settings.space).supernet(device)
    # the sandwich only draws training batches; the validation size does not matter here
    task = make_task(supernet, 16, 1, settings.task_seed)
    ckpt_dir = Path(ckpt_dir)
    resume = (ckpt_dir / "latest.json").is_file()
    t0 = time.perf_counter()
    config = TrainerConfig(
        steps=settings.steps,
        batch_size=settings.batch_size,
        n_random=settings.n_random,
        lr=settings.lr,
        seed=settings.seed,
        checkpoint_every=25,
        log_every=10,
    )
    trainer = SupernetTrainer(
        supernet, task, config, checkpoint_dir=ckpt_dir, progress=progress, resume=resume
    )
    if trainer.step > settings.steps:
        raise ConfigError(
            f"{ckpt_dir} holds a supernet trained {trainer.step} steps, more than the "
            f"{settings.steps} asked; use another --ckpt directory or the same steps"
        )
    history = trainer.train()
    ckpt = latest_checkpoint(ckpt_dir)
    state = json.loads((ckpt / "state.json").read_text())
    last = history[-10:]
    info = {
        "checkpoint": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
        "step": int(state["step"]),
        "model_sha256": state["files"]["model.safetensors"],
        "loss_max_last10": float(np.mean([h["loss_max"] for h in last])) if last else None,
        "loss_min_last10": float(np.mean([h["loss_min"] for h in last])) if last else None,
        "train_seconds": float(sum(h["seconds"] for h in history)),
        "load_seconds": time.perf_counter() - t0,
    }
    set_quant_enabled(supernet, True)
    supernet.eval()
    return supernet, info


def draw_archs(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct canonical uniform samples; the i-th depends only on (seed, i)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(out) < n:
        s = dict(space.canonical(space.sample(rng)))
        h = space.freeze(s).hash
        if h not in seen:
            seen.add(h)
            out.append(s)
    return out


# -- labelling ----------------------------------------------------------------------------------
def label_arch(
    supernet: Supernet,
    task: DigitsDenoising,
    costs: Mapping[str, float],
    sample: Mapping[str, Any],
    settings: LabelSettings,
    check_weak: bool = False,
) -> dict[str, Any]:
    """One CSV row (without index): weak labels, fine-tuned loss, seconds."""
    space = supernet.space
    t0 = time.perf_counter()
    with torch.no_grad(), supernet.activate(sample):
        weak = task.validate(supernet)["val_loss"]  # inherited weights, quant on
    t1 = time.perf_counter()
    model = supernet.extract(sample)
    set_quant_enabled(model, True)
    if check_weak:
        # the extracted model should start where the supernet is; log if it does not
        before = validate(model, task)["val_loss"]
        if abs(before - weak) > 1e-6 * max(1.0, abs(weak)):
            log.warning(
                "the extracted model scores %.6g, the supernet's sub-network %.6g before "
                "fine-tuning (relative gap %.2g)",
                before,
                weak,
                abs(before - weak) / abs(weak),
            )
    history = finetune(
        model,
        task,
        steps=settings.ft_steps,
        batch_size=settings.ft_batch_size,
        lr=settings.ft_lr,
        seed=settings.ft_seed,
        quant=True,
        progress=False,
    )
    strong = validate(model, task)["val_loss"]
    t2 = time.perf_counter()
    return {
        "spec_hash": space.freeze(sample).hash,
        "supernet_val_loss": weak,
        **{k: float(costs[k]) for k in WEAK_COLUMNS[1:]},
        STRONG_COLUMN: strong,
        "finetune_train_loss": float(history[-1]["loss"]) if history else float("nan"),
        "seconds_weak": t1 - t0,
        "seconds_strong": t2 - t1,
        "sample": json.dumps(dict(sample), separators=(",", ":")),
    }


def done_hashes(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {row["spec_hash"] for row in csv.DictReader(f)}


def generate(
    sn_settings: SupernetSettings,
    settings: LabelSettings,
    ckpt_dir: str | Path = DEFAULT_CKPT,
    out_csv: Path = LABELS_CSV,
    provenance: Path = PROVENANCE_JSON,
    minutes: float | None = None,
    device: str = "cpu",
    reverse: bool = False,
) -> int:
    """Label the architectures not yet in `out_csv` (appending; from the end of the list if
    `reverse`); stop after `minutes`. Returns the number of rows in the CSV."""
    supernet, sn_info = trained_supernet(sn_settings, ckpt_dir, device)
    space = supernet.space
    task = make_task(supernet, settings.val_images, settings.val_timesteps, sn_settings.task_seed)
    archs = draw_archs(space, settings.n_archs, settings.arch_seed)
    costs = cost_model(space).costs(archs, WEAK_COLUMNS[1:])  # name → (N,)
    done = done_hashes(out_csv)
    if done:
        prev = json.loads(provenance.read_text()) if provenance.is_file() else {}
        for key, now in (("supernet", sn_info), ("labels", asdict(settings))):
            old = prev.get(key, {})
            same = ("model_sha256",) if key == "supernet" else tuple(now)
            diff = [k for k in same if k != "n_archs" and old.get(k) != now.get(k)]
            if diff:
                raise ConfigError(
                    f"{out_csv} was labelled with other {key} settings ({diff}); move it away "
                    "or rerun with the settings recorded in its provenance JSON"
                )
    _write_provenance(provenance, sn_settings, settings, sn_info, status="running")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out_csv.is_file()
    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    todo = [i for i, s in enumerate(archs) if space.freeze(s).hash not in done]
    if reverse:
        todo.reverse()
    log.info("%d of %d architectures already labelled; %d to go", len(done), len(archs), len(todo))
    with open(out_csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new_file:
            writer.writeheader()
        for n, i in enumerate(tqdm(todo, desc="labels", unit="arch")):
            if deadline is not None and time.monotonic() > deadline:
                log.warning("time budget of %.0f min reached; stopping (rerun resumes)", minutes)
                break
            if space.freeze(archs[i]).hash in done_hashes(out_csv):
                continue  # another process labelled it meanwhile (parallel runs may share a CSV)
            c = {k: v[i] for k, v in costs.items()}
            row = label_arch(supernet, task, c, archs[i], settings, check_weak=n == 0)
            fcntl.flock(f, fcntl.LOCK_EX)  # one whole row at a time when processes share the file
            try:
                writer.writerow({"index": i, **row})
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    rows = len(done_hashes(out_csv))
    _write_provenance(provenance, sn_settings, settings, sn_info, status="done", rows=rows)
    return rows


def _write_provenance(
    path: Path,
    sn_settings: SupernetSettings,
    settings: LabelSettings,
    sn_info: Mapping[str, Any],
    status: str,
    rows: int | None = None,
) -> None:
    prev = json.loads(path.read_text()) if path.is_file() else {}
    doc = {
        "what": "weak (supernet, cost-table) and strong (fine-tuned) labels of random "
        "mobile_unet architectures on the digits denoising task",
        "generator": "bench/digits_labels.py",
        "csv": path.with_suffix(".csv").name,
        "status": status,
        "rows": rows,
        "supernet_settings": asdict(sn_settings),
        "supernet": dict(sn_info),
        "labels": asdict(settings),
        "latency_table": f"latency_tables/data {LATENCY_DEVICE} {LATENCY_BACKEND}",
        "metric": "DDPM eps-MSE on val_images held-out digits x val_timesteps fixed timesteps, "
        "fixed noise (lower is better)",
        "started": prev.get("started", dt.datetime.now(dt.timezone.utc).isoformat()),
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(),
        "host": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


# -- reading ------------------------------------------------------------------------------------
def read_labels(
    path: Path = LABELS_CSV, space: SearchSpace | None = None
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(samples, columns) of the cached labels; samples are validated against `space`."""
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; generate it with `.venv/bin/python bench/digits_labels.py`"
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # two parallel labellers may both finish the architecture where they meet: keep the first
    first: dict[str, dict[str, str]] = {}
    for r in rows:
        first.setdefault(r["spec_hash"], r)
    rows = sorted(first.values(), key=lambda r: int(r["index"]))
    if not rows:
        raise ConfigError(f"{path} has no rows; rerun bench/digits_labels.py")
    samples = [json.loads(r["sample"]) for r in rows]
    if space is not None:
        samples = [dict(space.validate(s)) for s in samples]
    cols: dict[str, np.ndarray] = {"index": np.array([int(r["index"]) for r in rows])}
    cols["spec_hash"] = np.array([r["spec_hash"] for r in rows])
    for k in (*WEAK_COLUMNS, STRONG_COLUMN, "finetune_train_loss", "seconds_weak"):
        cols[k] = np.array([float(r[k]) for r in rows])
    cols["seconds_strong"] = np.array([float(r["seconds_strong"]) for r in rows])
    return samples, cols


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=LabelSettings.n_archs, help="architectures")
    ap.add_argument("--minutes", type=float, default=None, help="stop labelling after this")
    ap.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="supernet checkpoint directory")
    ap.add_argument("--supernet-steps", type=int, default=SupernetSettings.steps)
    ap.add_argument("--ft-steps", type=int, default=LabelSettings.ft_steps)
    ap.add_argument("--ft-batch", type=int, default=LabelSettings.ft_batch_size)
    ap.add_argument("--val-images", type=int, default=LabelSettings.val_images)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(LABELS_CSV), help="labels CSV (provenance: .json)")
    ap.add_argument("--reverse", action="store_true", help="label from the end of the list")
    ap.add_argument("--supernet-only", action="store_true", help="train the supernet, stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    sn = SupernetSettings(steps=args.supernet_steps)
    if args.supernet_only:
        _, info = trained_supernet(sn, args.ckpt)
        print(json.dumps(info, indent=1))
        return
    ls = LabelSettings(
        n_archs=args.n,
        ft_steps=args.ft_steps,
        ft_batch_size=args.ft_batch,
        val_images=args.val_images,
    )
    out = Path(args.out)
    rows = generate(
        sn, ls, args.ckpt, out, out.with_suffix(".json"), args.minutes, reverse=args.reverse
    )
    print(json.dumps({"rows": rows, "csv": str(out)}))


if __name__ == "__main__":
    main()
