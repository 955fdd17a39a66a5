"""Helpers of the Ray Tune tests: picklable evaluator and strategy factories that Ray
workers import (this directory is put on their PYTHONPATH), and process bookkeeping so a
test ends exactly the Ray processes it started (never `ray stop`, which would end every
Ray instance of the machine, other people's included)."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.evaluators import SupernetEvaluator

HERE = Path(__file__).resolve().parent
SPACE = "test_mobile_unet"
OBJECTIVES = {"val_loss": "min", "params": "min"}
TAG_VAR = "MQNAS_RAY_TEST_TAG"  # inherited by every process a test's Ray starts


# -- what Ray workers rebuild -------------------------------------------------------------
@dataclass(frozen=True)
class DigitsEvaluatorFactory:
    """An untrained `space` supernet scored on the digits task; costs: params and MACs.

    pause_s: seconds each evaluation waits before scoring, so a test can stop a search
    while trials are still running (the evaluation itself stays the real one).
    diverged: the supernet's stem weights are NaN (what a diverged training leaves), so
    every evaluation really computes a NaN loss.
    """

    space: str = SPACE
    val_images: int = 8
    val_timesteps: int = 2
    seed: int = 0
    pause_s: float = 0.0
    diverged: bool = False

    def __call__(self):
        import search_spaces  # noqa: F401  (registers the spaces)
        from latency_tables.cost import CostModel
        from nas.supernet import get_space
        from nas.tasks.base import DenoiserIO
        from nas.tasks.digits import DigitsDenoising

        entry = get_space(self.space)
        net = entry.supernet(device="cpu").eval()
        if self.diverged:
            import torch

            with torch.no_grad():
                net.weight_parameters()[0].fill_(float("nan"))
        task = DigitsDenoising(
            DenoiserIO.of(net),
            seed=self.seed,
            val_images=self.val_images,
            val_timesteps=self.val_timesteps,
        )
        cost = CostModel(entry.space(), None)  # no latency table: params and MACs only
        cost_fn = functools.partial(cost.costs, what=("params", "macs"))
        if self.pause_s:
            return PausingEvaluator(net, task, cost_fn, pause_s=self.pause_s)
        return SupernetEvaluator(net, task, cost_fn)


class PausingEvaluator(SupernetEvaluator):
    """The supernet evaluation after a pause (a stand-in for a slower, fine-tuning one)."""

    def __init__(self, *args: Any, pause_s: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pause_s = pause_s

    def metrics(self, sample, report):
        time.sleep(self.pause_s)
        return super().metrics(sample, report)


@dataclass(frozen=True)
class StrategyFactory:
    """`name` over `space` (predictor: `small_predictor_guided`, real small parts)."""

    name: str
    space: str = SPACE
    seed: int = 0

    def __call__(self):
        import search_spaces  # noqa: F401
        from nas.strategies import make_strategy
        from nas.supernet import get_space

        space = get_space(self.space).space()
        if self.name == "predictor":
            from predictors.testing import small_predictor_guided

            return small_predictor_guided(space, _objectives(), self.seed)
        return make_strategy(self.name, space, _objectives(), self.seed)


def _objectives():
    from nas.strategies import Objective

    return [Objective(k, v) for k, v in OBJECTIVES.items()]


# -- environment and processes ------------------------------------------------------------
def ray_env_vars(tag: str) -> dict[str, str]:
    """What a process that starts Ray needs: this directory importable by Ray workers (Ray
    gives them the driver's working directory and script directory, not its sys.path),
    one thread per trial, no usage reporting, and `tag` to find every process it starts."""
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        TAG_VAR: tag,
    }


def worker_env(tag: str, **extra: str) -> dict[str, str]:
    """The whole environment of a subprocess that starts Ray (see `ray_env_vars`)."""
    return {**os.environ, **ray_env_vars(tag), **extra}


def ray_exe() -> str:
    return str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``TAG_VAR=tag`` (what one test started)."""
    want = f"{TAG_VAR}={tag}".encode()
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if want in env.split(b"\0"):
            out.append(int(d.name))
    return sorted(out)


def kill_tagged(tag: str, timeout: float = 30.0) -> list[int]:
    """SIGKILL every process tagged `tag`, by pid, until none is left; returns the pids."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = tagged_pids(tag)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {pids} tagged {tag} survive SIGKILL")
        time.sleep(0.2)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def files_naming_strategy_modules(ray_dir: Path) -> list[Path]:
    """Ray's files that name a strategy module: a pickle of a live strategy object does
    (a class is pickled by module and name); our JSON state names only the class."""
    return [p for p in ray_dir.rglob("*") if p.is_file() and b"nas.strategies" in p.read_bytes()]


# -- a search in a session of its own, killed with SIGKILL ---------------------------------
def store_records(run: Path) -> list[dict]:
    """The raw lines of the run's store (a line being written when read is skipped)."""
    p = run / "trials.jsonl"
    out = []
    for line in p.read_bytes().splitlines() if p.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def start_session(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    # its own session: one killpg reaches the driver and the Ray processes it spawned
    with log.open("w") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def kill_session(proc: subprocess.Popen, tag: str) -> list[int]:
    """SIGKILL the whole process group; returns the tagged processes that outlived it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # Ray workers run in sessions of their own; they notice their raylet is gone and exit
    try:
        wait_for(lambda: not tagged_pids(tag), 20, "Ray workers of the killed search to exit")
        return []
    except TimeoutError:
        return kill_tagged(tag)
