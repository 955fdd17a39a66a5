"""A phone's table over adb (the stand-in): killed builds resume, a lost device stops
the build with a clear error and a resumable table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from stand_in import update_state

import search_spaces  # noqa: F401
from latency_tables.adb import DeviceError
from latency_tables.backends import BACKENDS
from latency_tables.build import build_table
from latency_tables.structure import SpaceStructure
from latency_tables.table import LatencyTable
from nas import SPACES

ENTRY = "test_mobile_dit"
N_KEYS = 5


def keys():
    return [
        k for k in SpaceStructure(SPACES.get(ENTRY).space()).block_keys() if k.kernel == "fp32"
    ][:N_KEYS]


def adb_backend(phone):
    return BACKENDS.get("adb")(threads=1, warmup=1, runs=3, benchmark_binary=str(phone.binary))


def rows(csv_path) -> int:
    return max(0, len(csv_path.read_text().splitlines()) - 1) if csv_path.exists() else 0


def test_killed_build_resumes_measuring_only_missing_keys(phone, tmp_path):
    tables = tmp_path / "tables"
    script = textwrap.dedent(
        f"""
        import search_spaces
        from latency_tables.backends import BACKENDS
        from latency_tables.build import build_table
        from latency_tables.structure import SpaceStructure
        from nas import SPACES
        entry = SPACES.get({ENTRY!r})
        keys = [k for k in SpaceStructure(entry.space()).block_keys() if k.kernel == "fp32"][:{N_KEYS}]
        backend = BACKENDS.get("adb")(threads=1, warmup=1, runs=3, benchmark_binary={str(phone.binary)!r})
        build_table(entry, backend, {str(tables)!r}, "pixel8", keys=keys, progress=False)
        """
    )
    csv_path = tables / "pixel8" / "adb.csv"
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    deadline = time.monotonic() + 300
    while rows(csv_path) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # as `kill -9`: no cleanup runs
    proc.wait()
    before = LatencyTable.load(tables, "pixel8", "adb")
    done = {e.key.id: e.measured_at for e in before.entries()}
    assert 2 <= len(done) < N_KEYS, "the build was killed midway"
    rep = build_table(
        SPACES.get(ENTRY), adb_backend(phone), tables, "pixel8", keys=keys(), progress=False
    )
    assert (rep.already, rep.measured, rep.failed) == (len(done), N_KEYS - len(done), 0)
    after = LatencyTable.load(tables, "pixel8", "adb")
    assert len(after) == N_KEYS
    assert all(after.get(k).measured_at == t for k, t in done.items()), "finished keys were kept"
    assert after.meta["fingerprint"]["model"] == "Pixel 8"


def test_device_lost_mid_build_leaves_a_resumable_table(phone, tmp_path):
    update_state(phone.state_dir, disconnect_after_benchmarks=2)
    with pytest.raises(DeviceError, match=r"(?i)device.*(not found|disconnected|cable)"):
        build_table(
            SPACES.get(ENTRY), adb_backend(phone), tmp_path, "pixel8", keys=keys(), progress=False
        )
    kept = len(LatencyTable.load(tmp_path, "pixel8", "adb"))
    assert 0 < kept < N_KEYS  # what was measured before the device went away is kept
    update_state(phone.state_dir, disconnect_after_benchmarks=None)  # plugged back in
    rep = build_table(
        SPACES.get(ENTRY), adb_backend(phone), tmp_path, "pixel8", keys=keys(), progress=False
    )
    assert (rep.already, rep.measured) == (kept, N_KEYS - kept)


def test_a_table_of_another_phone_is_refused(phone, tmp_path):
    from nas import ConfigError

    build_table(
        SPACES.get(ENTRY), adb_backend(phone), tmp_path, "pixel8", keys=keys()[:1], progress=False
    )
    state = update_state(phone.state_dir)
    state["devices"][0]["props"]["ro.build.fingerprint"] = (
        "google/husky/husky:15/X/1:user/release-keys"
    )
    state["devices"][0]["props"]["ro.product.model"] = "Pixel 8 Pro"
    update_state(phone.state_dir, devices=state["devices"])
    with pytest.raises(ConfigError, match="fingerprint"):
        build_table(
            SPACES.get(ENTRY), adb_backend(phone), tmp_path, "pixel8", keys=keys(), progress=False
        )
