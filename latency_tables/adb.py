"""A small adb client for timing `.tflite` blocks on an Android phone.

`AdbClient` drives the real `adb` executable (Android platform-tools, or
Debian's `adb` package) with `subprocess`: it lists devices, reads the
phone's fingerprint (`getprop`) and CPU governors, pushes files and runs
TFLite's `benchmark_model` binary, whose output `parse_benchmark_output`
turns into a `BenchmarkResult`.

Every failure is a `DeviceError` whose message says how to fix it (install
adb, plug the phone in, accept the RSA prompt, pick a serial, ...).

Output formats parsed here, taken from the tools' sources:

- `adb devices -l`: `"%-22s %s"` (serial, state) then optional
  ` usb:…`, ` product:…`, ` model:…` (non-alphanumerics → `_`), ` device:…`,
  ` transport_id:N` (adb `transport.cpp`, `append_transport`).
- `adb shell getprop`: one `[key]: [value]` per line.
- `benchmark_model` (LiteRT `tflite/tools/benchmark/benchmark_model.cc`,
  stats from `StatWithPercentiles::OutputToStream` in
  `xla/tsl/util/stats_calculator.h`; lines carry an `INFO: ` prefix from
  `tflite/tools/logging.h` in recent builds, none in older ones)::

      INFO: Running benchmark for at least 20 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
      INFO: count=20 first=1234 curr=1100 min=1050 max=1400 avg=1120.5 std=40 p5=1060 median=1110 p95=1300
      INFO: Inference timings in us: Init: 4537, First inference: 1566, Warmup (avg): 1387.05, Inference (avg): 1120.5

  Older builds (`tensorflow/core/util/stats_calculator.h`, `Stat`) print the
  stats line without `p5=/median=/p95=`; when every run took the same time
  it reads `count=20 curr=1100(all same)`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from latency_tables.measurement import Measurement
from nas.errors import MqnasError

log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "/data/local/tmp/mqnas"
BENCHMARK_BINARY = "benchmark_model"
INSTALL_HINT = (
    "install Android platform-tools (https://developer.android.com/tools/releases/platform-tools) "
    "and put its folder on PATH, or on Debian/Ubuntu `sudo apt-get install adb`; "
    "or pass the full path of the adb executable"
)
_DEVICE_HELP = (
    "connect the phone with a data-capable USB cable, enable Developer options > USB debugging, "
    "unlock the screen and accept the 'Allow USB debugging?' (RSA key) prompt; "
    "`adb devices -l` must then list it as 'device'"
)
_GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf)"
_TIMINGS_RE = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})"
)
_LOG_PREFIX_RE = re.compile(r"^(?:INFO|WARN|WARNING|ERROR): ")
_STATS_START_RE = re.compile(r"^(?:count|curr)=\d")
_KV_RE = re.compile(rf"(\w+)=({_NUM})")


class DeviceError(MqnasError):
    """adb or the phone failed; the message says what to do about it."""


@dataclass(frozen=True)
class DeviceInfo:
    """One line of `adb devices -l`."""

    serial: str
    state: str  # device, offline, unauthorized, no permissions, recovery, ...
    product: str = ""
    model: str = ""
    device: str = ""
    transport_id: int | None = None
    usb: str = ""


@dataclass(frozen=True)
class DeviceFingerprint:
    """What identifies the phone and OS build a latency table was measured on."""

    model: str
    manufacturer: str
    soc: str
    android_version: str
    sdk: str
    build_fingerprint: str
    abi: str
    serial: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class BenchmarkResult:
    """Timings of one `benchmark_model` run, in milliseconds (the tool prints µs)."""

    mean_ms: float
    median_ms: float
    std_ms: float
    n: int
    init_ms: float
    first_ms: float
    warmup_avg_ms: float
    raw: str
    min_ms: float
    p5_ms: float | None = None
    p95_ms: float | None = None

    def to_measurement(self) -> Measurement:
        return Measurement(
            mean_ms=self.mean_ms,
            median_ms=self.median_ms,
            std_ms=self.std_ms,
            n=self.n,
            min_ms=self.min_ms,
        )


# --------------------------------------------------------------------------- parsers


def parse_devices(text: str) -> list[DeviceInfo]:
    """Parse `adb devices` or `adb devices -l` output (stdout only)."""
    out: list[DeviceInfo] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        serial, rest = parts[0], parts[1:]
        if not rest:
            continue
        if rest[0] == "no" and len(rest) > 1 and rest[1] == "permissions":
            state, rest = (
                "no permissions",
                [p for p in rest[2:] if ":" in p and not p.startswith(("(", "["))],
            )
        else:
            state, rest = rest[0], rest[1:]
        fields: dict[str, str] = {}
        for tok in rest:
            key, sep, value = tok.partition(":")
            if sep and key in ("product", "model", "device", "transport_id"):
                fields[key] = value
            elif sep and key == "usb":
                fields["usb"] = tok
        tid = fields.get("transport_id", "")
        out.append(
            DeviceInfo(
                serial=serial,
                state=state,
                product=fields.get("product", ""),
                model=fields.get("model", ""),
                device=fields.get("device", ""),
                transport_id=int(tid) if tid.isdigit() else None,
                usb=fields.get("usb", ""),
            )
        )
    return out


_GETPROP_RE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """Parse `adb shell getprop` (`[key]: [value]` lines; multi-line values are joined)."""
    props: dict[str, str] = {}
    pending: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.rstrip("\r")
        if pending is not None:  # inside a value that spans lines
            key, chunks = pending
            if line.endswith("]"):
                chunks.append(line[:-1])
                props[key] = "\n".join(chunks)
                pending = None
            else:
                chunks.append(line)
            continue
        m = _GETPROP_RE.match(line)
        if m:
            props[m.group(1)] = m.group(2)
        elif line.startswith("[") and "]: [" in line:
            key, _, first = line[1:].partition("]: [")
            pending = (key, [first])
    return props


def _num(s: str) -> float:
    return float(s)  # float() accepts nan/inf as C++ iostreams print them


def parse_stats_line(line: str) -> dict[str, float] | None:
    """Parse a `Stat`/`StatWithPercentiles` line into {count, avg, std, median, ...} (µs).

    Handles `count=N first=.. curr=.. min=.. max=.. avg=.. std=..[ p5=.. median=.. p95=..]`,
    the all-same form `count=N curr=X(all same)[ p5=..]` and the oldest
    `curr=X count=N ...` order. Returns None when the line is not a stats line.
    """
    line = _LOG_PREFIX_RE.sub("", line.strip())
    if not _STATS_START_RE.match(line):
        return None
    values = {k: _num(v) for k, v in _KV_RE.findall(line)}
    if "count" not in values:
        return None
    if "avg" not in values and values["count"] > 0:  # all runs took the same time
        values.setdefault("avg", values.get("curr", math.nan))
        values.setdefault("std", 0.0)
    return values


def _tail(text: str, lines: int = 15) -> str:
    kept = [ln for ln in text.strip().splitlines() if not ln.startswith("* daemon")]
    return "\n".join(kept[-lines:])


def parse_benchmark_output(text: str) -> BenchmarkResult:
    """Turn `benchmark_model`'s output into a `BenchmarkResult` (raises `DeviceError`)."""
    lines = [_LOG_PREFIX_RE.sub("", ln.strip()) for ln in text.splitlines()]
    timings = None
    for ln in lines:
        timings = _TIMINGS_RE.search(ln) or timings
    # The stats line follows each "Running benchmark for at least ..." line:
    # the first block is the warm-up, the last the timed runs.
    blocks: list[dict[str, float]] = []
    for i, ln in enumerate(lines):
        if ln.startswith("Running benchmark for at least"):
            for nxt in lines[i + 1 :]:
                if not nxt:
                    continue
                stats = parse_stats_line(nxt)
                if stats is not None:
                    blocks.append(stats)
                break
    if timings is None or not blocks:
        raise DeviceError(
            "benchmark_model did not print its timings (the model may have failed to load or "
            "run; check that the graph was pushed and that benchmark_model matches the phone's "
            f"ABI). Last lines of its output:\n{_tail(text)}"
        )
    stats = blocks[-1]
    n = int(stats["count"])
    if n == 0:
        raise DeviceError(
            "benchmark_model ran 0 timed iterations (num_runs=0 or max_secs too small); "
            f"raise --num_runs. Output tail:\n{_tail(text)}"
        )
    us = 1e-3
    mean_us = stats.get("avg", _num(timings["avg"]))
    median_us = stats.get("median", mean_us)
    return BenchmarkResult(
        mean_ms=mean_us * us,
        median_ms=median_us * us,
        std_ms=stats.get("std", 0.0) * us,
        n=n,
        init_ms=_num(timings["init"]) * us,
        first_ms=_num(timings["first"]) * us,
        warmup_avg_ms=_num(timings["warmup"]) * us,
        raw=text,
        # the all-same form prints only curr=, which is then every run's time
        min_ms=stats.get("min", stats.get("curr", mean_us)) * us,
        p5_ms=stats["p5"] * us if "p5" in stats else None,
        p95_ms=stats["p95"] * us if "p95" in stats else None,
    )


# --------------------------------------------------------------------------- client


class AdbClient:
    """Runs `adb [-s SERIAL] ...` and turns its failures into teaching `DeviceError`s.

    With `serial=None` the client uses $ANDROID_SERIAL, else picks the only
    connected device on first use, and then pins it with `-s`, so a phone plugged in mid-run cannot change the
    target; with several devices it raises and lists their serials.
    """

    def __init__(
        self, adb: str = "adb", serial: str | None = None, timeout_s: float = 60.0
    ) -> None:
        self.adb = adb
        self.serial = serial
        self.timeout_s = timeout_s
        self.benchmark_path = f"{DEFAULT_REMOTE_DIR}/{BENCHMARK_BINARY}"

    # ---- process plumbing

    def _executable(self) -> str:
        found = shutil.which(self.adb)
        if found is None:
            raise DeviceError(f"adb executable {self.adb!r} was not found on PATH: {INSTALL_HINT}.")
        return found

    def _run(
        self,
        args: Sequence[str],
        *,
        device: bool = True,
        check: bool = True,
        timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self._executable()]
        if device:
            cmd += ["-s", self.resolve_serial()]
        cmd += list(args)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        log.debug("running %s", shlex.join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError as e:
            raise DeviceError(f"could not start adb ({e}): {INSTALL_HINT}.") from e
        except subprocess.TimeoutExpired as e:
            raise DeviceError(
                f"`{shlex.join(cmd)}` did not finish within {timeout:g} s. The phone may be hung or "
                "asleep: unlock it, replug the cable, run `adb kill-server`, or raise timeout_s."
            ) from e
        self._raise_for_adb_error(proc, cmd)
        if check and proc.returncode != 0:
            raise DeviceError(
                f"`{shlex.join(cmd)}` failed with exit code {proc.returncode}:\n"
                f"{_tail(proc.stderr + proc.stdout)}"
            )
        return proc

    def _raise_for_adb_error(self, proc: subprocess.CompletedProcess[str], cmd: list[str]) -> None:
        """Translate adb's own (transport-level) errors, whatever the exit code."""
        if proc.returncode == 0:
            return
        msg = "\n".join(
            ln
            for ln in (proc.stderr + "\n" + proc.stdout).splitlines()
            if ln and not ln.startswith("* daemon")
        )
        head = msg.splitlines()[0] if msg else ""
        adb_level = re.match(r"^(?:error|adb|adb\.exe)(?:: error)?: ", head) is not None
        if not adb_level:
            return
        serial = self.serial or "(any)"
        if "unauthorized" in msg:
            raise DeviceError(
                f"device {serial} is unauthorized: unlock the phone and accept the 'Allow USB "
                "debugging?' prompt (tick 'Always allow from this computer'). No prompt? In "
                "Developer options tap 'Revoke USB debugging authorizations', replug the cable and "
                f"run `adb kill-server`. adb said: {head}"
            )
        if "offline" in msg:
            raise DeviceError(
                f"device {serial} is offline: replug the USB cable (or try another cable/port), "
                "unlock the phone, then `adb reconnect offline` or `adb kill-server && adb devices`. "
                f"adb said: {head}"
            )
        if "no permissions" in msg:
            raise DeviceError(
                f"no permission to open device {serial}: add a udev rule for the phone and put your "
                "user in the plugdev group (Debian: `sudo apt-get install android-sdk-platform-tools-common`), "
                f"then replug. adb said: {head}"
            )
        if "not found" in msg and "device" in msg:
            raise DeviceError(
                f"device {serial} was not found: it was disconnected or the serial is wrong. Check "
                f"the USB cable and that the phone is unlocked; `adb devices -l` lists what is "
                f"connected{self._connected_suffix()}. adb said: {head}"
            )
        if "no devices" in msg:
            raise DeviceError(f"no Android device is connected: {_DEVICE_HELP}. adb said: {head}")
        if "more than one" in msg:
            raise DeviceError(
                f"several devices are connected; choose one with --serial{self._connected_suffix()}."
            )
        raise DeviceError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{_tail(msg)}")

    def _connected_suffix(self) -> str:
        try:
            proc = subprocess.run(
                [self._executable(), "devices", "-l"],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        listed = ", ".join(f"{d.serial} ({d.state})" for d in parse_devices(proc.stdout))
        return f" (connected now: {listed or 'none'})"

    # ---- device discovery

    def devices(self) -> list[DeviceInfo]:
        """Devices adb sees, in any state (`adb devices -l`)."""
        return parse_devices(self._run(["devices", "-l"], device=False).stdout)

    def resolve_serial(self) -> str:
        """The serial this client talks to; picks the only attached device if none was given."""
        if self.serial is None and os.environ.get("ANDROID_SERIAL"):
            self.serial = os.environ["ANDROID_SERIAL"]  # adb's own default target
        if self.serial is not None:
            return self.serial
        found = self.devices()
        if not found:
            raise DeviceError(f"no Android device is connected: {_DEVICE_HELP}.")
        if len(found) > 1:
            listed = "\n".join(f"  {d.serial}  {d.state}  {d.model}" for d in found)
            raise DeviceError(
                f"{len(found)} devices are connected; choose one with --serial SERIAL:\n{listed}"
            )
        only = found[0]
        if only.state == "unauthorized":
            self.serial = only.serial
            raise DeviceError(
                f"device {only.serial} is unauthorized: unlock the phone and accept the 'Allow USB "
                "debugging?' prompt (tick 'Always allow from this computer'). No prompt? In "
                "Developer options tap 'Revoke USB debugging authorizations', replug the cable and "
                "run `adb kill-server`."
            )
        if only.state != "device":
            raise DeviceError(f"device {only.serial} is {only.state!r}, not ready: {_DEVICE_HELP}.")
        self.serial = only.serial
        log.info("using device %s (%s)", only.serial, only.model or "unknown model")
        return only.serial

    # ---- shell, files

    def shell(self, *args: str, check: bool = True, timeout_s: float | None = None) -> str:
        """Run a command in the device shell and return its stdout.

        adb joins the arguments with spaces and the device shell re-splits
        them, so each argument is quoted here.
        """
        return self._run(
            ["shell", *(shlex.quote(a) for a in args)], check=check, timeout_s=timeout_s
        ).stdout

    def push(self, local: str | Path, remote: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise DeviceError(f"cannot push {local}: no such file on this computer.")
        out = self._run(["push", str(local), remote]).stdout
        log.debug("%s", out.strip())

    def exists(self, remote: str) -> bool:
        return self._run(["shell", "ls", shlex.quote(remote)], check=False).returncode == 0

    def ensure_benchmark_binary(
        self, local: str | Path | None, remote_dir: str = DEFAULT_REMOTE_DIR
    ) -> str:
        """Make `<remote_dir>/benchmark_model` present and executable; return its path.

        Skips the push when the binary is already on the device.
        """
        remote = f"{remote_dir.rstrip('/')}/{BENCHMARK_BINARY}"
        if self.exists(remote):
            log.info("benchmark_model already on the device at %s", remote)
        elif local is None:
            raise DeviceError(
                f"benchmark_model is not on the device at {remote} and no local binary was given. "
                "Download the prebuilt `android_aarch64_benchmark_model` (TFLite/LiteRT performance "
                "measurement docs) or build it with bazel, then pass its path."
            )
        else:
            self.shell("mkdir", "-p", remote_dir)
            self.push(local, remote)
            self.shell("chmod", "755", remote)
        self.benchmark_path = remote
        return remote

    # ---- phone description

    def getprop(self) -> dict[str, str]:
        return parse_getprop(self._run(["shell", "getprop"]).stdout)

    def fingerprint(self) -> DeviceFingerprint:
        p = self.getprop()
        soc = p.get("ro.soc.model") or p.get("ro.board.platform") or p.get("ro.hardware", "")
        return DeviceFingerprint(
            model=p.get("ro.product.model", ""),
            manufacturer=p.get("ro.product.manufacturer", ""),
            soc=soc,
            android_version=p.get("ro.build.version.release", ""),
            sdk=p.get("ro.build.version.sdk", ""),
            build_fingerprint=p.get("ro.build.fingerprint", ""),
            abi=p.get("ro.product.cpu.abi", ""),
            serial=p.get("ro.serialno") or self.resolve_serial(),
        )

    def cpu_governors(self) -> dict[int, str]:
        """cpufreq governor per CPU index; {} when the files cannot be read.

        `grep -H` (toybox) prints `path:value`, so each governor is tied to its
        CPU even when the shell's glob order is cpu0, cpu1, cpu10, cpu2, ...
        """
        proc = self._run(["shell", "grep", "-H", ".", _GOVERNOR_GLOB], check=False)
        govs: dict[int, str] = {}
        for line in proc.stdout.splitlines():
            m = re.match(
                r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/scaling_governor:(.+)$", line.strip()
            )
            if m:
                govs[int(m.group(1))] = m.group(2).strip()
        if not govs:
            log.warning("could not read CPU governors: %s", _tail(proc.stderr, 3) or "no output")
        return govs

    # ---- benchmark

    def benchmark(
        self,
        graph_remote: str,
        num_threads: int = 1,
        warmup_runs: int = 10,
        num_runs: int = 50,
        taskset_mask: str | None = None,
        use_xnnpack: bool = True,
        extra_args: Sequence[str] = (),
        *,
        min_secs: float = 0.0,
        warmup_min_secs: float = 0.0,
        timeout_s: float | None = None,
    ) -> BenchmarkResult:
        """Time `graph_remote` with benchmark_model and parse its output.

        benchmark_model keeps running until both `num_runs` and `min_secs`
        (default 1 s; warm-up: 0.5 s) are reached; both are passed as 0 here so
        that `n == num_runs` and a table's meta says exactly what was run.
        """
        cmd: list[str] = []
        if taskset_mask is not None:
            cmd += ["taskset", taskset_mask]
        cmd += [
            self.benchmark_path,
            f"--graph={graph_remote}",
            f"--num_threads={num_threads}",
            f"--warmup_runs={warmup_runs}",
            f"--num_runs={num_runs}",
            f"--min_secs={min_secs:g}",
            f"--warmup_min_secs={warmup_min_secs:g}",
            f"--use_xnnpack={'true' if use_xnnpack else 'false'}",
            *extra_args,
        ]
        proc = self._run(
            ["shell", *(shlex.quote(a) for a in cmd)], check=False, timeout_s=timeout_s
        )
        raw = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
        if proc.returncode != 0:
            raise DeviceError(
                f"benchmark_model failed on {graph_remote} (exit {proc.returncode}). Check that the "
                "graph was pushed, that benchmark_model is the phone's ABI and executable "
                f"(ensure_benchmark_binary). Last lines:\n{_tail(raw)}"
            )
        result = parse_benchmark_output(raw)
        log.debug(
            "%s: mean %.4f ms median %.4f ms std %.4f ms n=%d",
            graph_remote,
            result.mean_ms,
            result.median_ms,
            result.std_ms,
            result.n,
        )
        return result
