"""Data-parallel supernet training and one-shot search: Ray Train workers, torch.distributed.

Synchronous data parallelism (the all-reduce SGD of Goyal et al., "Accurate, Large
Minibatch SGD", arXiv:1706.02677, §2): with W ranks and a global batch of B rows, rank r
computes the loss L_r on its rows B_r (|B_r| = B / W) and the ranks average

    g = (1 / W) · Σ_r ∇L_r,

which is ∇L of the whole batch because every loss here is a mean over equally many
elements per row (MSE), so L = (1 / W) · Σ_r L_r when the shards are equal. Hence the
even split (`DistributedSettings.check_batch`), and W workers at B / W rows per rank
train like one process at B rows, up to the order of float additions.

What every rank must agree on, and how it does without talking:

* the batch: each rank draws the *global* batch from the task's stream and keeps its
  rows; the noise is drawn for the global batch before the split (`DataParallel.shard`),
  so a row's (t, ε) is the one a single process gives it;
* the sub-networks of a step: drawn from generators seeded by (seed, step)
  (`nas.training.util.step_rng`), the same on every rank and after any resume;
* the weights: every rank starts from the same pickled supernet and applies the same
  averaged gradient; `check_in_sync` verifies it at every checkpoint.

Why an explicit all-reduce and not `DistributedDataParallel`: a sandwich step runs
several sub-networks (max, min, random ones) and one backward each, accumulating into the
shared weights before one optimizer step. DDP reduces at every backward (or, under
`no_sync`, at the last one only, with the graph of that last sub-network deciding which
parameters it waits for), and a weight-sharing supernet's sub-networks use different
parameter subsets, so DDP needs ``find_unused_parameters`` and still mislabels the
weights only earlier sub-networks used. One flat all-reduce of every weight's gradient
after the whole sandwich is both simpler and exact. A weight no sub-network of the step
used has no gradient (None) on every rank, and must keep None (AdamW skips it, where a
zero gradient would still decay its moments and apply weight decay): each rank sends a
"has a gradient" flag beside the gradients (None sent as zeros, so every rank reduces
the same tensor list), and a weight gets the average wherever any rank had one.

Quantization caveat: fake-quant activation ranges (per-tensor max |x|, LSQ's mean |x|)
are statistics of the batch a rank sees, like BatchNorm's without SyncBatchNorm. With
activation quantization on, W ranks quantize with the ranges of their B / W rows, so
their gradient matches a single process only in distribution; with quant off or
weight-only schemes it matches exactly.

Ray Train (`ray.train.torch.TorchTrainer`) starts the workers, one CPU (and one GPU with
``use_gpu``: nccl instead of gloo) each, and sets up the process group. The supernet, the
task and the settings reach the workers through Ray's object store; rank 0 returns the
final weights and the history, and writes the checkpoints in the run's directory
(safetensors + JSON, `nas.training.checkpoint`), which every rank reads to resume — so
the run directory must be on storage every node sees, as for the search's trials. The
worker count is not part of the trajectory: a checkpoint resumes with any count. A
failed worker group is restarted from the latest checkpoint up to ``max_failures``
times; past that, `DistributedTrainingError` says where the checkpoints are.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nas.errors import ConfigError, MqnasError
from nas.logs import progress_bar
from nas.supernet import Supernet
from nas.tasks.base import Task
from nas.training.checkpoint import LATEST
from nas.training.objective import NoisyBatch
from nas.training.settings import DistributedSettings, TrainerConfig
from nas.training.util import device_of

log = logging.getLogger(__name__)
CPU = torch.device("cpu")  # the collectives' device when none is given (gloo)


class DistributedTrainingError(MqnasError):
    """A data-parallel run failed on its workers, or its ranks' weights drifted apart."""


# -- one rank's view of the group ------------------------------------------------------------
@dataclass(frozen=True)
class DataParallel:
    """This process's place in an initialised torch.distributed group of W ranks.

    `device` holds the tensors the collectives exchange (nccl needs CUDA ones).
    """

    rank: int
    world_size: int
    device: torch.device = CPU

    @classmethod
    def current(cls, device: torch.device | str = "cpu") -> DataParallel:
        """The group torch.distributed was initialised with (Ray Train does it)."""
        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError(
                "DataParallel.current() needs an initialised torch.distributed process group; "
                "run under train_supernet_parallel (Ray Train) or init_process_group first"
            )
        return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))

    def check_batch(self, batch_size: int) -> None:
        """ConfigError unless the global `batch_size` splits evenly over the ranks."""
        DistributedSettings(num_workers=self.world_size).check_batch(batch_size)

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of `n` (a multiple of the world size)."""
        self.check_batch(n)
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def take(self, x: Tensor | None) -> Tensor | None:
        """This rank's rows of `x` (dim 0 = batch); None stays None."""
        return None if x is None else x[self.rows(x.shape[0])]

    def shard(self, nb: NoisyBatch) -> NoisyBatch:
        """This rank's rows of a noisy global batch (noised whole, then split)."""
        return NoisyBatch(
            x_t=self.take(nb.x_t),
            t=self.take(nb.t),
            target=self.take(nb.target),
            context=self.take(nb.context),
        )

    def average(
        self, params: Sequence[nn.Parameter], scalars: Sequence[float] = ()
    ) -> tuple[list[float], float]:
        """Replace each parameter's gradient by its mean over the ranks; also average
        `scalars` (losses). Returns the averaged scalars and the seconds spent reducing.

        Collective: every rank calls it with the same parameters in the same order. A
        parameter keeps a None gradient only where no rank has one (module docstring).
        """
        device = self.device
        has = [p.grad is not None for p in params]
        buckets: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(params):
            buckets.setdefault(p.dtype, []).append(i)
        flat = {
            dtype: torch.cat(
                [
                    (params[i].grad if has[i] else torch.zeros_like(params[i]))
                    .reshape(-1)
                    .to(device)
                    for i in idx
                ]
            )
            for dtype, idx in buckets.items()
        }
        # flags and losses in float64: exact counts, and losses as precise as a float
        meta = torch.tensor([*map(float, has), *scalars], dtype=torch.float64, device=device)
        t0 = _sync_time(device)
        for buf in [*flat.values(), meta]:
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        seconds = _sync_time(device) - t0
        for dtype, idx in buckets.items():
            buf = flat[dtype].div_(self.world_size)
            offset = 0
            for i in idx:
                p = params[i]
                g = buf[offset : offset + p.numel()].view_as(p).to(p.device)
                offset += p.numel()
                if meta[i] > 0:
                    if p.grad is None:
                        p.grad = g.clone()
                    else:
                        p.grad.copy_(g)
        means = (meta[len(params) :] / self.world_size).tolist()
        return means, seconds

    def mean(self, values: Sequence[float]) -> list[float]:
        """`values` averaged over the ranks (collective)."""
        return self.average([], values)[0]

    def check_in_sync(self, module: nn.Module, step: int) -> None:
        """DistributedTrainingError unless every rank holds the same state as rank 0.

        Compares a float64 checksum of the state per rank (max and min over the ranks);
        equal weights give equal sums bit for bit, as every rank adds them in one order.
        """
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for v in module.state_dict().values():
            total += v.detach().double().sum().to(self.device)
        both = torch.stack([total, -total])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        hi, lo = float(both[0]), -float(both[1])
        if hi != lo:
            raise DistributedTrainingError(
                f"the ranks' supernet states differ at step {step} (checksums {lo!r} … {hi!r}): "
                "a layer draws randomness or branches on data per rank, or keeps per-rank "
                "buffers (running statistics); make it deterministic given the weights and "
                "input, or train in one process (supernet.distributed: null)"
            )


def _sync_time(device: torch.device) -> float:
    """perf_counter after the device's queued work (nccl collectives run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# -- launching the workers ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Progress:
    """The driver's progress bar, fed by rank 0 through a Ray queue."""

    total: int
    initial: int
    desc: str


def _latest_step(directory: Path | None) -> int | None:
    """The step `latest.json` points at (None: no checkpoint, or an unreadable pointer)."""
    if directory is None:
        return None
    try:
        return int(json.loads((directory / LATEST).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ensure_ray(settings: DistributedSettings) -> None:
    """Start a local Ray unless one is up; ConfigError when it cannot hold the workers."""
    import ray

    if not ray.is_initialized():
        import os

        # one CPU per worker is what each asks for: a smaller machine still runs them
        cpus = max(settings.num_workers, os.cpu_count() or 1)
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    have = ray.cluster_resources()
    need = {
        "CPU": settings.num_workers,
        **({"GPU": settings.num_workers} if settings.use_gpu else {}),
    }
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if have.get(k, 0) < v}
    if short:
        lacking = ", ".join(f"{int(v)} {k} (the cluster has {h:g})" for k, (v, h) in short.items())
        raise ConfigError(
            f"supernet.distributed.num_workers={settings.num_workers} needs {lacking}: the "
            "workers would wait forever; lower num_workers, raise ray.num_cpus for a local "
            "Ray, or join a cluster that has them (ray.address)"
            + ("; or set use_gpu: false" if "GPU" in short else "")
        )


def _worker_device(use_gpu: bool) -> torch.device:
    if not use_gpu:
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def _cause(e: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrappers (RayTaskError keeps it as .cause)."""
    failures = getattr(e, "worker_failures", None) or {}
    for rank in sorted(failures):
        inner = failures[rank]
        inner = getattr(inner, "cause", None) or inner
        if isinstance(inner, MqnasError):
            return inner
    return e


def run_workers(
    fn: Callable[[dict[str, Any]], Any],
    job: Any,
    settings: DistributedSettings,
    *,
    what: str,
    progress: _Progress | None = None,
    hint: Callable[[], str] = lambda: "",
) -> Any:
    """Run ``fn({"job": ref, "progress": queue})`` on `settings.num_workers` Ray Train
    workers (one torch.distributed rank each) and return rank 0's return value.

    `job` goes through Ray's object store (``ray.get(config["job"])`` in `fn`); the
    queue (None without `progress`) takes ``(step, postfix)`` items for the driver's
    progress bar. A worker's `MqnasError` is raised as it is; any other failure becomes
    `DistributedTrainingError` naming `what` failed, with ``hint()`` (asked after the
    failure) on how to continue.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    _ensure_ray(settings)
    queue = None
    if progress is not None:
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})
    per_worker = {"CPU": 1, **({"GPU": 1} if settings.use_gpu else {})}
    with tempfile.TemporaryDirectory(prefix="mqnas-train-") as storage:
        trainer = TorchTrainer(
            fn,
            train_loop_config={"job": ray.put(job), "progress": queue},
            scaling_config=ScalingConfig(
                num_workers=settings.num_workers,
                use_gpu=settings.use_gpu,
                resources_per_worker=per_worker,
            ),
            torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
            # Ray Train's own run state only: our checkpoints live in the run directory
            run_config=RunConfig(
                name="mqnas",
                storage_path=storage,
                failure_config=FailureConfig(max_failures=settings.max_failures),
            ),
        )
        log.info("%s on %d Ray Train workers", what, settings.num_workers)
        stop = threading.Event()
        feeder = None
        if queue is not None and progress is not None:
            feeder = threading.Thread(target=_feed_bar, args=(queue, progress, stop), daemon=True)
            feeder.start()
        try:
            result = trainer.fit()
        except Exception as e:  # Ray's TrainingFailedError and whatever wraps a worker's
            cause = _cause(e)
            if cause is not e:
                raise cause from None
            raise DistributedTrainingError(
                f"{what} failed on its Ray Train workers "
                f"(after {settings.max_failures} restarts): {_describe(e)}{hint()}"
            ) from e
        finally:
            stop.set()
            if feeder is not None:
                feeder.join(timeout=5)
            if queue is not None:
                queue.shutdown()
    return result.return_value


def _describe(e: BaseException) -> str:
    """What went wrong on each failed rank: the last line of its error (the exception)."""

    def last(err: BaseException) -> str:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        return lines[-1] if lines else type(err).__name__

    failures = getattr(e, "worker_failures", None)
    if not failures:
        return last(e)
    return "; ".join(f"rank {rank}: {last(err)}" for rank, err in sorted(failures.items()))


def _feed_bar(queue: Any, progress: _Progress, stop: threading.Event) -> None:
    """Move the driver's bar with what rank 0 puts in `queue`, until `stop`."""
    from ray.util.queue import Empty

    bar = progress_bar(progress.total, initial=progress.initial, desc=progress.desc, unit="step")
    try:
        while not stop.is_set():
            try:
                step, postfix = queue.get(timeout=0.5)
            except Empty:
                continue
            except Exception:  # noqa: BLE001  (the queue's actor went away with the run)
                return
            bar.n = step
            bar.set_postfix(postfix)
            bar.refresh()
    finally:
        bar.close()


def _reporter(config: dict[str, Any], rank: int) -> Callable[[int, dict[str, str]], None] | None:
    """Rank 0's way of moving the driver's progress bar (None elsewhere, or without one)."""
    queue = config.get("progress")
    if queue is None or rank != 0:
        return None

    def put(step: int, postfix: dict[str, str]) -> None:
        queue.put_nowait((step, postfix))

    return put


def _state_bytes(module: nn.Module) -> bytes:
    """`module`'s state as safetensors bytes: what rank 0 hands back to the driver (Ray
    refuses tensors in a training function's return value)."""
    from safetensors.torch import save

    return save(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    )


def _load_state(module: nn.Module, data: bytes) -> None:
    from safetensors.torch import load

    module.load_state_dict(load(data))


def _shippable(supernet: Supernet) -> Supernet:
    """The supernet as the workers receive it: on the CPU (each moves it to its device)."""
    return supernet if device_of(supernet).type == "cpu" else copy.deepcopy(supernet).cpu()


# -- supernet training ------------------------------------------------------------------------
@dataclass(frozen=True)
class _TrainJob:
    supernet: Supernet
    task: Task
    config: TrainerConfig
    use_gpu: bool
    checkpoint_dir: Path | None
    resume: bool
    start_step: int | None  # what latest.json pointed at when the run started
    keep_checkpoints: int | None


def _train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of `train_supernet_parallel` (runs in a Ray Train worker)."""
    import ray

    from nas.training.sandwich import SupernetTrainer

    job: _TrainJob = ray.get(config["job"])
    device = _worker_device(job.use_gpu)
    dp = DataParallel.current(device)
    # a restarted worker group continues from what this run has checkpointed since it began
    latest = _latest_step(job.checkpoint_dir)
    resume = latest is not None and (job.resume or latest != job.start_step)
    report = _reporter(config, dp.rank)
    trainer = SupernetTrainer(
        job.supernet,
        job.task,
        job.config,
        device=device,
        checkpoint_dir=job.checkpoint_dir,
        progress=False,  # the driver draws the bar
        resume=resume,
        keep_checkpoints=job.keep_checkpoints,
        parallel=dp,
        on_step=(
            None
            if report is None
            else lambda rec: report(
                rec["step"], {"max": f"{rec['loss_max']:.4f}", "min": f"{rec['loss_min']:.4f}"}
            )
        ),
    )
    history = trainer.train()
    if dp.rank != 0:
        return None
    return {"history": history, "state": _state_bytes(trainer.supernet)}


def train_supernet_parallel(
    supernet: Supernet,
    task: Task,
    config: TrainerConfig,
    settings: DistributedSettings,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    keep_checkpoints: int | None = 2,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """`SupernetTrainer(supernet, task, config, ...).train()` on `settings.num_workers`
    data-parallel workers (module docstring); returns the history and leaves the trained
    weights in `supernet`.

    `config.batch_size` is the global batch. `checkpoint_dir` receives rank 0's
    checkpoints (required to survive a failure: restarts resume from them); `resume`
    continues from its latest one, whatever worker count wrote it. Raises
    `DistributedTrainingError` when the workers fail more than `settings.max_failures`
    times, and a worker's own `MqnasError` (a diverged run, a foreign checkpoint) as is.
    """
    if not isinstance(config, TrainerConfig):
        raise TypeError(
            f"train_supernet_parallel takes one TrainerConfig, got {type(config).__name__}"
        )
    settings.check_batch(config.batch_size)
    directory = Path(checkpoint_dir).resolve() if checkpoint_dir is not None else None
    start = _latest_step(directory)
    if resume and start is None:
        raise ConfigError(
            f"resume=True but {str(directory)!r} holds no checkpoint (no {LATEST}); start "
            "fresh (resume=False) or pass the directory a run wrote"
        )
    job = _TrainJob(
        _shippable(supernet),
        task,
        config,
        settings.use_gpu,
        directory,
        resume,
        start,
        keep_checkpoints,
    )
    initial = start if resume and start is not None else 0

    def hint() -> str:
        if directory is None:
            return "; pass checkpoint_dir to be able to resume after a failure"
        return (
            f"; the checkpoints in {str(directory)!r} are intact (latest: step "
            f"{_latest_step(directory)}): resume from them with any worker count "
            "(`nas search --resume RUN`, or resume=True), or raise "
            "supernet.distributed.max_failures to restart automatically"
        )

    out = run_workers(
        _train_worker,
        job,
        settings,
        what="supernet training",
        progress=_Progress(config.steps, initial, "supernet") if progress else None,
        hint=hint,
    )
    _load_state(supernet, out["state"])
    return out["history"]


# -- one-shot search --------------------------------------------------------------------------
@dataclass(frozen=True)
class _SearchJob:
    supernet: Supernet
    task: Task
    cost_model: Any
    settings: Any  # OneShotSettings (nas.strategies imports this package)
    use_gpu: bool


def _search_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of `search_parallel` (runs in a Ray Train worker)."""
    import ray

    from nas.strategies.oneshot import OneShotSearch

    job: _SearchJob = ray.get(config["job"])
    device = _worker_device(job.use_gpu)
    dp = DataParallel.current(device)
    report = _reporter(config, dp.rank)
    search = OneShotSearch(
        job.supernet,
        job.task,
        job.cost_model,
        job.settings,
        device=device,
        parallel=dp,
    )
    result = search.run(
        progress=False,
        on_step=(
            None
            if report is None
            else lambda h: report(
                int(h["step"]) + 1,
                {"task": f"{h['task_loss']:.4f}", "ms": f"{h['expected_latency_ms']:.3f}"},
            )
        ),
    )
    if dp.rank != 0:
        return None
    return {"result": result, "state": _state_bytes(search.supernet)}


def search_parallel(
    supernet: Supernet,
    task: Task,
    cost_model: Any,
    settings: Any,
    distributed: DistributedSettings,
    *,
    progress: bool = True,
) -> Any:
    """The differentiable one-shot search (`nas.strategies.oneshot.OneShotSearch`) on
    `distributed.num_workers` data-parallel workers: each takes its rows of every
    batch, and the gradients of the weights and of the architecture logits are
    averaged like the trainer's. Returns the `OneShotResult` and leaves the searched
    weights in `supernet` (joint mode trains them)."""
    distributed.check_batch(settings.batch_size)
    job = _SearchJob(_shippable(supernet), task, cost_model, settings, distributed.use_gpu)
    out = run_workers(
        _search_worker,
        job,
        distributed,
        what="one-shot search",
        progress=_Progress(settings.steps, 0, "one-shot search") if progress else None,
        hint=lambda: "; it keeps no checkpoint: run it again",
    )
    _load_state(supernet, out["state"])
    return out["result"]


__all__ = [
    "DataParallel",
    "DistributedTrainingError",
    "run_workers",
    "search_parallel",
    "train_supernet_parallel",
]
