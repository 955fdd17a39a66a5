"""A real two-node Ray cluster on this machine (the way a search outgrows one host):
`ray start --head`, a second `ray start --address`, each node one CPU, then a search that
joins by address. Trials must land on both nodes, each recording the node it ran on.

The driver runs in its own process: Ray caches its authentication token per process, and
the pytest process may already hold another one from a local Ray. The test ends exactly
the processes its cluster started (found by an environment tag), never with `ray stop`,
which ends every Ray instance on the machine."""

import json
import secrets
import shutil
import sys
import tempfile
import uuid

import pytest
from pipeline_helpers import run_cmd
from ray_helpers import free_port, kill_tagged, ray_exe, tagged_pids, worker_env

from nas.trials import TrialStore

pytestmark = pytest.mark.slow

N_TRIALS = 4
DRIVER = """
import json, sys
from pathlib import Path

import ray
from ray_helpers import OBJECTIVES, DigitsEvaluatorFactory, StrategyFactory

from nas.ray_tune import RaySettings, StrategySearcher, run_tune

run, address, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
settings = RaySettings(address=address, cpus_per_trial=1, max_concurrent=2)
searcher = StrategySearcher(StrategyFactory("random"), list(OBJECTIVES))
# a half-second pause per evaluation keeps both trial slots busy at once
run_tune(searcher, DigitsEvaluatorFactory(pause_s=0.5), run, n, settings, "random")
(run / "nodes.json").write_text(json.dumps([x["NodeID"] for x in ray.nodes() if x["Alive"]]))
"""


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    r = run_cmd([ray_exe(), "start", *args], env=env, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on this host; yields (address, environment)."""
    tag = f"cluster-{uuid.uuid4().hex[:8]}"
    # `ray start --head` turns on token authentication: every node and driver needs the
    # token; this cluster gets its own
    env = worker_env(tag, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    port = free_port()
    # Ray's unix sockets live under its temp dir (paths ≤ 107 bytes): keep it short; one
    # per cluster also keeps its `ray_current_cluster` file away from other Ray users
    temp = tempfile.mkdtemp(prefix="mqray", dir="/tmp")
    common = ["--num-cpus=1", "--object-store-memory=100000000", f"--temp-dir={temp}"]
    try:
        _ray_start(["--head", f"--port={port}", "--include-dashboard=false", *common], env)
        _ray_start([f"--address=127.0.0.1:{port}", *common], env)
        yield f"127.0.0.1:{port}", env
    finally:
        kill_tagged(tag)
        shutil.rmtree(temp, ignore_errors=True)
    assert not tagged_pids(tag)


def test_a_search_joins_a_two_node_cluster_and_uses_both_nodes(cluster, tmp_path):
    address, env = cluster
    run = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    r = run_cmd(
        [sys.executable, str(driver), str(run), address, str(N_TRIALS)], env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    nodes = json.loads((run / "nodes.json").read_text())
    assert len(nodes) == 2
    trials = TrialStore(run).trials()
    assert len(trials) == N_TRIALS
    assert all(t.state == "completed" for t in trials), [t.error for t in trials]
    assert {t.provenance["node_id"] for t in trials} == set(nodes)


def test_joining_without_the_clusters_token_says_how_to_fix_it(cluster, tmp_path):
    address, env = cluster
    env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray retries the refused join for 20 s
    code = (
        "from nas.ray_tune import RaySettings, init_ray\n"
        f"init_ray(RaySettings(address={address!r}))\n"
    )
    r = run_cmd([sys.executable, "-c", code], env=env, timeout=300)
    assert r.returncode != 0
    assert "RayJoinError" in r.stderr and "RAY_AUTH_MODE=token" in r.stderr, r.stderr[-3000:]
