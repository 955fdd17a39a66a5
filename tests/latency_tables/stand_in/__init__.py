"""A stand-in for `adb` + a phone, for tests that have no phone.

`install_stand_in(bin_dir, state_dir)` writes an executable `adb` into
`bin_dir`; put `bin_dir` first on PATH and `latency_tables.adb.AdbClient`
talks to it exactly as to the real tool (same command lines, same output
formats, same exit codes). The "phone" lives in `state_dir`:

- `state.json`: the attached devices (serial, state, getprop values of a
  Pixel 8 / Tensor G3, cpufreq governors) and failure injection:
  `disconnect_after_benchmarks: N` (after N benchmark_model runs the device
  is gone for every command), `unauthorized: true`,
  `governors_readable: false`.
- `fs/<serial>/`: the device filesystem (pushed files land here).

`benchmark_model` on the "device" runs the pushed `.tflite` with the
ai-edge-litert interpreter on this host and prints the real tool's output.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

STATE_ENV = "MQNAS_FAKE_ADB_STATE"
SCRIPT = Path(__file__).with_name("adb.py")

PIXEL8_PROPS: dict[str, str] = {
    "ro.product.model": "Pixel 8",
    "ro.product.manufacturer": "Google",
    "ro.product.brand": "google",
    "ro.product.name": "shiba",
    "ro.product.device": "shiba",
    "ro.product.board": "shiba",
    "ro.hardware": "shiba",
    "ro.board.platform": "zuma",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G3",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.id": "AP1A.240505.004",
    "ro.build.type": "user",
    "ro.build.fingerprint": "google/shiba/shiba:14/AP1A.240505.004/11583682:user/release-keys",
    "ro.debuggable": "0",
    "persist.sys.timezone": "Europe/London",
}
# Tensor G3: 4 Cortex-A510, 4 Cortex-A715, 1 Cortex-X3.
PIXEL8_GOVERNORS = ["sched_pixel"] * 9


def device(
    serial: str = "38111FDJH00ABC",
    props: dict[str, str] | None = None,
    governors: list[str] | None = None,
    transport_id: int = 1,
    state: str = "device",
) -> dict[str, Any]:
    p = dict(PIXEL8_PROPS if props is None else props)
    p["ro.serialno"] = serial
    p["ro.boot.serialno"] = serial
    return {
        "serial": serial,
        "state": state,
        "usb": f"usb:3-{transport_id}",
        "product": p.get("ro.product.name", ""),
        "model": p.get("ro.product.model", ""),
        "device": p.get("ro.product.device", ""),
        "transport_id": transport_id,
        "props": p,
        "governors": list(PIXEL8_GOVERNORS if governors is None else governors),
    }


def default_state() -> dict[str, Any]:
    return {
        "server_running": False,
        "devices": [device()],
        "unauthorized": False,
        "governors_readable": True,
        "disconnect_after_benchmarks": None,
        "benchmarks_run": 0,
    }


def load_state(state_dir: Path) -> dict[str, Any]:
    return json.loads((Path(state_dir) / "state.json").read_text())


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    (Path(state_dir) / "state.json").write_text(json.dumps(state, indent=2))


def update_state(state_dir: Path, **changes: Any) -> dict[str, Any]:
    state = load_state(state_dir)
    state.update(changes)
    save_state(state_dir, state)
    return state


def install_stand_in(bin_dir: Path, state_dir: Path, python: str = sys.executable) -> Path:
    """Write `bin_dir/adb` (a shell script exec'ing `python adb.py`) and a default phone."""
    bin_dir, state_dir = Path(bin_dir), Path(state_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / "state.json").exists():
        save_state(state_dir, default_state())
    exe = bin_dir / "adb"
    exe.write_text(
        "#!/bin/sh\n"
        f"{STATE_ENV}={shlex.quote(str(state_dir.resolve()))}\n"
        f"export {STATE_ENV}\n"
        f'exec {shlex.quote(python)} {shlex.quote(str(SCRIPT))} "$@"\n'
    )
    exe.chmod(0o755)
    return exe
