"""Wall time and peak memory of the main job, run exactly as the README says.

`.venv/bin/nas search experiments/unet_digits.yaml` from the project root (a relative
path, the `nas` executable), in a subprocess; the resident memory of its whole process
tree (the driver, Ray's processes and the trial workers) is sampled every 0.5 s. Prints
JSON (and writes it to bench/results/main_job.json): wall time, peak tree RSS, peak
single-process RSS, the stages' times from the log, trials completed and failed, the
supernet's final losses, and the chosen architecture's figures from the run's summary.
The run directory stays under runs/ for a look.

    .venv/bin/python bench/main_job.py [--experiment experiments/unet_digits.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, run as a script
import psutil
import yaml
from record import publish

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(sum, max) resident set size in bytes over `proc` and its descendants."""
    total = biggest = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--experiment", default="experiments/unet_digits.yaml", help="relative to the root"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "main_job.json"))
    args = ap.parse_args()
    doc = yaml.safe_load((ROOT / args.experiment).read_text())
    nas = Path(sys.executable).parent / "nas"
    readme = Path(".venv/bin/nas")  # the README's spelling, when that is this interpreter's
    exe = str(readme) if (ROOT / readme).resolve() == nas.resolve() else str(nas)
    log_path = Path(tempfile.mkdtemp(prefix="mqnas-main-job-")) / "log.txt"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [exe, "search", args.experiment],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peak = {"tree": 0, "process": 0}
        ps = psutil.Process(proc.pid)

        def sample() -> None:
            while proc.poll() is None:
                try:
                    total, biggest = tree_rss(ps)
                except psutil.Error:
                    break
                peak["tree"] = max(peak["tree"], total)
                peak["process"] = max(peak["process"], biggest)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        sampler.join(timeout=2)
    wall = time.perf_counter() - t0
    text = log_path.read_text()
    if code != 0:
        sys.stderr.write(text[-4000:])
        raise SystemExit(f"nas search exited with {code}; log: {log_path}")
    run = ROOT / re.search(r"^run: (\S+)", text, re.MULTILINE).group(1)
    summary = json.loads((run / "summary.json").read_text())
    states = [json.loads(line)["state"] for line in (run / "trials.jsonl").read_text().splitlines()]
    supernet = [m.groups() for m in re.finditer(r"loss_max=(\S+) loss_min=(\S+)", text)]
    stamps = {}
    for pattern, name in (
        (r"(\d\d:\d\d:\d\d) INFO nas.app.pipeline: run directory", "start"),
        (r"(\d\d:\d\d:\d\d) INFO nas.training.sandwich: step (\d+)/\2 ", "supernet_trained"),
        (r"(\d\d:\d\d:\d\d) INFO nas.pareto: wrote", "search_done"),
    ):
        m = re.search(pattern, text, re.MULTILINE)
        if m:
            stamps[name] = m.group(1)
    result = {
        "experiment": doc["name"],
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "wall_seconds": round(wall, 1),
        "peak_rss_tree_mb": round(peak["tree"] / 2**20, 1),
        "peak_rss_process_mb": round(peak["process"] / 2**20, 1),
        "log_stamps": stamps,
        "command": f"{exe} search {args.experiment}",
        "trials": summary["trials"],
        "trials_completed": states.count("completed"),
        "trials_failed": states.count("failed"),
        "supernet_final_loss": (
            {"max": float(supernet[-1][0]), "min": float(supernet[-1][1])} if supernet else None
        ),
        "front": summary["front"],
        "chosen": {
            k: summary["chosen"][k]
            for k in (
                "arch",
                "val_loss",
                "predicted_latency_ms",
                "measured_latency_ms",
                "params",
                "bytes",
                "scores",
            )
        },
        "exports": [
            {
                k: e[k]
                for k in (
                    "trial",
                    "val_loss",
                    "scores",
                    "predicted_latency_ms",
                    "measured_latency_ms",
                )
            }
            for e in summary["exports"]
        ],
        "run_dir": str(run.relative_to(ROOT)),
    }
    publish(result, args.out, indent=2)


if __name__ == "__main__":
    main()
