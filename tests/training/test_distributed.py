"""Data-parallel supernet training on 2 gloo workers: real Ray Train, real torch.distributed.

One local Ray (2 CPUs) serves the module; each Ray Train run still starts its worker
processes (a few seconds each on 2 cores), so the runs are few and short.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from training_support import make_supernet, make_trainer

from latency_tables.cost import CostModel
from latency_tables.testing import synthetic_table
from nas.config import parse_config
from nas.errors import ConfigError
from nas.strategies.oneshot import OneShotSearch, OneShotSettings
from nas.tasks.base import Batch, Task
from nas.tasks.digits import DigitsDenoising
from nas.training import TrainerConfig, read_checkpoint
from nas.training.distributed import (
    DataParallel,
    DistributedTrainingError,
    search_parallel,
    train_supernet_parallel,
)
from nas.training.settings import DistributedSettings

#: Small and exact: no activation fake-quant, whose ranges are per-shard statistics
#: (see nas.training.distributed), and no warm-up so every step moves the weights fully.
#: The gradients agree to float rounding (~1e-6 relative), but AdamW's step is ±lr for a
#: near-zero gradient element whatever its rounding, so the weights agree to a fraction of
#: lr per step: lr = 1e-4 keeps that under the 1e-5 tolerance over a few steps.
KW = {"batch_size": 8, "n_random": 1, "lr": 1e-4, "quant": False, "seed": 0, "warmup_steps": 0}
TWO = DistributedSettings(num_workers=2)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    # the workers unpickle this module's task wrapper: ship its code, not a module name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    yield
    ray.shutdown()


def _assert_close(got: torch.nn.Module, want: torch.nn.Module, atol: float = 1e-5) -> None:
    want_state = want.state_dict()
    for name, v in got.state_dict().items():
        err = float((v.double() - want_state[name].double()).abs().max()) if v.numel() else 0.0
        assert err <= atol, f"{name}: max |Δ| = {err:.3g}"


@pytest.mark.slow
def test_two_workers_train_like_one_process_on_the_same_global_batch(ray_local, digits_for):
    steps = 3
    ref = make_supernet(0)
    task = digits_for(ref)
    init = copy.deepcopy(ref)
    ref_hist = make_trainer(ref, task, steps=steps, progress=False, **KW).train()

    net = make_supernet(0)
    hist = train_supernet_parallel(net, task, TrainerConfig(steps=steps, **KW), TWO, progress=False)

    # each worker ran 4 rows of the 8-row batch; the averaged gradient is the 8-row one
    _assert_close(net, ref)
    moved = max(
        float((a - b).abs().max())
        for a, b in zip(net.state_dict().values(), init.state_dict().values())
    )
    assert moved > 1e-4  # the weights did train: ≈ lr per step (equality is not the init's)
    assert [r["step"] for r in hist] == list(range(1, steps + 1))
    for key in ("loss_max", "loss_min", "loss_rand", "grad_norm"):
        assert [r[key] for r in hist] == pytest.approx([r[key] for r in ref_hist], rel=1e-5)
    assert all(r["comm_seconds"] > 0 for r in hist)


class KilledWorkerTask(Task):
    """The digits task whose rank-1 worker process dies (os._exit) as it draws batch `at`
    — once: the marker file it leaves keeps the resumed run alive."""

    def __init__(self, base: DigitsDenoising, at: int, marker: Path) -> None:
        self.base = base
        self.name = base.name
        self.objective = base.objective
        self.at = at
        self.marker = marker

    def batches(self, batch_size: int, seed: int, device="cpu") -> Iterator[Batch]:
        for i, b in enumerate(self.base.batches(batch_size, seed, device)):
            first_pass = not self.marker.exists()
            if i == self.at and dist.is_initialized() and dist.get_rank() == 1 and first_pass:
                self.marker.touch()
                os._exit(1)  # a killed process: no exception, no clean-up
            yield b

    def loss(self, model, batch, generator=None):
        return self.base.loss(model, batch, generator)

    def validate(self, model):
        return self.base.validate(model)


@pytest.mark.slow
def test_killed_worker_then_resume_with_one_worker_loses_no_checkpoint(
    ray_local, digits_for, tmp_path
):
    steps, every, killed_at = 6, 2, 3
    ref = make_supernet(0)
    base = digits_for(ref)
    make_trainer(ref, base, steps=steps, progress=False, **KW).train()

    ckpt = tmp_path / "checkpoints"
    task = KilledWorkerTask(base, killed_at, tmp_path / "killed")
    config = TrainerConfig(steps=steps, checkpoint_every=every, **KW)
    net = make_supernet(0)
    with pytest.raises(DistributedTrainingError, match="intact .latest: step 2.*any worker count"):
        train_supernet_parallel(
            net, task, config, TWO, checkpoint_dir=ckpt, keep_checkpoints=None, progress=False
        )
    assert (tmp_path / "killed").exists()  # rank 1 did die drawing batch 3
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 2
    before = read_checkpoint(ckpt / "step_2")
    assert before.step == 2 and [r["step"] for r in before.state["history"]] == [1, 2]

    # --resume with another worker count: the checkpoint does not record one
    net = make_supernet(7)  # another process's weights: all of them come from the checkpoint
    hist = train_supernet_parallel(
        net,
        task,
        config,
        DistributedSettings(num_workers=1),
        checkpoint_dir=ckpt,
        resume=True,
        keep_checkpoints=None,
        progress=False,
    )
    assert [r["step"] for r in hist] == list(range(1, steps + 1))
    for step in (2, 4, 6):  # nothing lost, nothing rewritten out of place
        c = read_checkpoint(ckpt / f"step_{step}")  # hashes checked: every one loads
        assert c.step == step and len(c.state["history"]) == step
    assert torch.equal(
        read_checkpoint(ckpt / "step_2").model["conv_in.weight"], before.model["conv_in.weight"]
    )
    _assert_close(net, ref)  # 2 workers, a death, 1 worker: the uninterrupted run


@pytest.mark.slow
def test_two_workers_search_like_one_process(ray_local, digits_for, tmp_path):
    """PaS widths and depth gates (no activation fake-quant: exact), weights and logits
    trained jointly: the averaged gradients of both are the global batch's. Adam moves an
    element whose gradient is float-rounding noise by ±lr whatever its sign (see KW), so
    the weights' lr is 1e-5: they move by up to 3e-5 and agree to 2e-6."""
    ref = make_supernet(0)
    init = copy.deepcopy(ref)
    task = digits_for(ref)
    cost = CostModel(ref.space, synthetic_table(ref.space, tmp_path))
    target = 0.5 * float(cost.predict([ref.space.max()])[0])
    settings = OneShotSettings(
        target, steps=3, batch_size=8, lam=1.0, lr_w=1e-5, lr_arch=1e-4, search=("width", "depth")
    )
    want = OneShotSearch(ref, task, cost, settings).run(progress=False)

    net = make_supernet(0)
    got = search_parallel(net, task, cost, settings, TWO, progress=False)

    _assert_close(net, ref)
    moved = max(
        float((a - b).abs().max())
        for a, b in zip(net.state_dict().values(), init.state_dict().values())
    )
    assert moved > 2e-5  # the weights did train (≈ lr per step)
    for key in ("task_loss", "expected_latency_ms", "loss"):
        assert [h[key] for h in got.history] == pytest.approx(
            [h[key] for h in want.history], rel=1e-5
        )
    assert got.probabilities.keys() == want.probabilities.keys()
    for label, p in got.probabilities.items():
        assert p == pytest.approx(want.probabilities[label], abs=1e-5), label
    assert got.sample == want.sample


# -- no Ray needed ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("distributed", "message"),
    [
        ({"backend": "mpi", "num_workers": 2}, "supernet.distributed.backend.*'ray'.*'mpi'"),
        ({"num_workers": 0}, "supernet.distributed.num_workers.*greater than or equal to 1"),
        ({"num_workers": 3}, "batch_size=32 does not split evenly over.*num_workers=3"),
        ({"num_workers": 2, "gpus": 1}, "unknown key 'supernet.distributed.gpus'.*use_gpu"),
    ],
)
def test_distributed_config_errors_name_the_key_and_what_is_allowed(distributed, message):
    doc = {
        "name": "x",
        "space": "test_mobile_unet",
        "search": {"objectives": {"val_loss": "min"}},
        "supernet": {"distributed": distributed},
    }
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_distributed_config_converts_to_settings_and_leaves_the_trainer_alone():
    doc = {
        "name": "x",
        "space": "test_mobile_unet",
        "search": {"objectives": {"val_loss": "min"}},
        "supernet": {"distributed": {"num_workers": 2, "use_gpu": False}},
    }
    s = parse_config(doc).supernet
    assert s.distributed_settings() == DistributedSettings("ray", 2, False, 0)
    assert s.trainer_config(0) == TrainerConfig(
        **{k: v for k, v in s.model_dump(exclude={"teacher", "distributed"}).items()}, seed=0
    )
    del doc["supernet"]
    assert parse_config(doc).supernet.distributed_settings() is None  # one process


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"backend": "horovod"}, "backend 'horovod' is unknown; use one of \\['ray'\\]"),
        ({"num_workers": 0}, "num_workers must be an integer ≥ 1, got 0"),
        ({"max_failures": -1}, "max_failures must be an integer ≥ 0"),
    ],
)
def test_distributed_settings_validate(kw, message):
    with pytest.raises(ConfigError, match=message):
        DistributedSettings(**kw)


def test_shards_split_the_global_batch_evenly(digits_for):
    ranks = [DataParallel(r, 2) for r in range(2)]
    x = torch.arange(8)
    assert torch.cat([dp.take(x) for dp in ranks]).tolist() == list(range(8))
    with pytest.raises(ConfigError, match="batch_size 7 does not split evenly over 2 workers"):
        ranks[0].rows(7)
    net = make_supernet(0)
    with pytest.raises(ConfigError, match="pick a multiple of 2"):
        make_trainer(net, digits_for(net), steps=1, batch_size=5, parallel=ranks[0])
