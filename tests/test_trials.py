"""Trial records and the run's trial store (JSONL + parquet snapshot)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading

import pandas as pd
import pytest

import nas
import search_spaces  # noqa: F401
from nas.errors import ConfigError
from nas.space import SearchSpace
from nas.trials import Trial, TrialStore, load_run


def _trial(i: int, space: SearchSpace | None = None, **kw) -> Trial:
    space = space or SearchSpace.from_choices({"op": ["a", "b"], "width": [8, 16]})
    sample = space.sample(i)
    base = {
        "id": f"t{i}",
        "sample": sample,
        "spec_hash": space.freeze(sample).hash,
        "metrics": {"val_loss": 0.1 * i + 0.2},
        "cost": {"latency_ms": 1.5 + i, "params": 1000 + i},
        "state": "completed",
        "timings": {"evaluate_s": 0.01 * i},
        "provenance": {"strategy": "random", "seed": i, "host": "h", "extra": {"k": [1, 2]}},
        "created": 1_700_000_000.0 + i,
    }
    base.update(kw)
    return Trial(**base)


def test_trial_json_round_trip_is_exact():
    t = _trial(3, metrics={"val_loss": 0.1 + 0.2, "fid": float("inf")}, error=None)
    back = Trial.from_json(json.loads(json.dumps(t.to_json())))
    assert back == t
    assert back.metrics["val_loss"] == 0.1 + 0.2  # no rounding on the way
    f = _trial(4, state="failed", metrics={}, error="RuntimeError: boom")
    assert Trial.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_trial_refuses_bad_records():
    with pytest.raises(ConfigError, match="state 'done' is unknown"):
        _trial(0, state="done")
    with pytest.raises(ConfigError, match="not a number"):
        _trial(0, metrics={"val_loss": "low"})
    with pytest.raises(ConfigError, match="lacks \\['spec_hash'\\]"):
        Trial.from_json({k: v for k, v in _trial(0).to_json().items() if k != "spec_hash"})


def test_store_appends_reads_and_later_duplicates_win(tmp_path):
    store = TrialStore(tmp_path / "run")
    assert store.trials() == []
    for i in range(3):
        store.append(_trial(i))
    store.append(_trial(1, metrics={"val_loss": 9.0}))  # a retried trial
    got = store.trials()
    assert [t.id for t in got] == ["t0", "t1", "t2"] == store.ids()
    assert got[1].metrics["val_loss"] == 9.0
    assert (tmp_path / "run" / "trials.jsonl").read_text().count("\n") == 4


def test_a_torn_last_line_is_ignored_and_the_next_append_survives(tmp_path, caplog):
    store = TrialStore(tmp_path)
    store.append(_trial(0))
    line = json.dumps(_trial(1).to_json())
    with open(store.jsonl, "a") as f:
        f.write(line[: len(line) // 2])  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING, logger="nas.trials"):
        assert store.ids() == ["t0"]
    assert "torn" in caplog.text
    store.append(_trial(2))
    assert store.ids() == ["t0", "t2"]


def test_concurrent_appends_keep_every_line(tmp_path):
    store = TrialStore(tmp_path)

    def work(k):
        for i in range(15):
            store.append(_trial(100 * k + i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.trials()) == 60


def test_frame_columns(tmp_path):
    store = TrialStore(tmp_path)
    for i in range(3):
        store.append(_trial(i))
    store.append(_trial(3, state="failed", metrics={}, error="OOM"))
    df = store.frame()
    assert list(df.columns[:5]) == ["id", "state", "spec_hash", "created", "error"]
    for c in ["val_loss", "latency_ms", "params", "time.evaluate_s", "prov.strategy", "prov.seed"]:
        assert c in df.columns
    assert {"sample.op", "sample.width"} <= set(df.columns)
    assert df["val_loss"].isna().tolist() == [False, False, False, True]
    assert json.loads(df["sample"][2]) == _trial(2).sample
    assert json.loads(df["prov.extra"][0]) == {"k": [1, 2]}  # nested values as JSON text
    assert df["error"].isna().tolist() == [True, True, True, False]
    assert df["error"][3] == "OOM"


def test_frame_omits_per_label_columns_of_wide_spaces(tmp_path):
    space = nas.get_space("test_mobile_unet").space()
    assert len(space) > 64
    store = TrialStore(tmp_path)
    store.append(_trial(0, space=space))
    df = store.frame()
    assert not any(c.startswith("sample.") for c in df.columns)
    assert json.loads(df["sample"][0]) == space.sample(0)


def test_a_metric_and_a_cost_with_one_name_is_an_error(tmp_path):
    store = TrialStore(tmp_path)
    store.append(_trial(0, metrics={"latency_ms": 3.0}))
    with pytest.raises(ConfigError, match="latency_ms.*both a metric and a cost"):
        store.frame()


def test_snapshot_is_atomic_and_load_run_reads_the_newer_file(tmp_path):
    store = TrialStore(tmp_path)
    for i in range(3):
        store.append(_trial(i))
    path = store.snapshot()
    assert path == tmp_path / "trials.parquet" and path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.jsonl", "trials.parquet"]
    pd.testing.assert_frame_equal(load_run(tmp_path), store.frame(), check_dtype=False)

    store.append(_trial(3))  # the JSONL is now newer than the snapshot
    assert load_run(tmp_path)["id"].tolist() == ["t0", "t1", "t2", "t3"]
    # a snapshot newer than the JSONL is what load_run reads
    st = store.jsonl.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_run(tmp_path)["id"].tolist() == ["t0", "t1", "t2"]
    assert load_run(tmp_path / "trials.parquet")["id"].tolist() == ["t0", "t1", "t2"]
    assert nas.load_run is load_run


def test_load_run_names_the_path_when_there_is_nothing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path)) + ".*no trials"):
        load_run(tmp_path)


def test_load_run_of_a_run_without_trials_yet_is_an_empty_frame(tmp_path):
    # a run whose supernet is still training has config.yaml but no trials.jsonl yet
    (tmp_path / "config.yaml").write_text("name: x\n")
    for _ in range(2):
        df = load_run(tmp_path)
        assert len(df) == 0 and {"id", "state", "created", "sample"} <= set(df.columns)
        (tmp_path / "trials.jsonl").write_text("")  # then an empty record


def test_a_nan_metric_makes_a_failed_trial_not_a_result():
    import torch

    from nas.evaluators import SupernetEvaluator
    from nas.supernet import get_space
    from nas.tasks.base import DenoiserIO
    from nas.tasks.digits import DigitsDenoising

    net = get_space("test_mobile_unet").supernet(device="cpu").eval()
    task = DigitsDenoising(DenoiserIO.of(net), seed=0, val_images=4, val_timesteps=1)
    ev = SupernetEvaluator(net, task)
    sample = net.space.default()
    assert ev.evaluate(sample).state == "completed"
    with torch.no_grad():
        net.weight_parameters()[0].fill_(float("nan"))  # what a diverged training leaves
    t = ev.evaluate(sample)
    assert t.state == "failed" and math.isnan(t.metrics["val_loss"])  # kept as measured
    assert t.error == "FloatingPointError: non-finite metrics {'val_loss': nan}"
