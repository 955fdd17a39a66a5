"""Stand-in `adb` (Android Debug Bridge 1.0.41) talking to a simulated phone.

Run through the script `install_stand_in` writes; the phone's state is the
directory in $MQNAS_FAKE_ADB_STATE (see `__init__.py`). Command lines,
stdout/stderr split, messages and exit codes follow the real adb 1.0.41
(Debian 29.0.6) and the device's toybox/mksh; `benchmark_model` follows
LiteRT's `tflite/tools/benchmark/benchmark_model.cc` and
`benchmark_tflite_model.cc`, with stats printed as
`StatWithPercentiles::OutputToStream` does.
"""

from __future__ import annotations

import fcntl
import glob
import json
import math
import os
import random
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ["MQNAS_FAKE_ADB_STATE"])
SH = "/system/bin/sh"


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


# --------------------------------------------------------------------------- state


@contextmanager
def locked_state() -> Iterator[dict[str, Any]]:
    """Read-modify-write of state.json under a file lock."""
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = STATE_DIR / "state.json"
        state = json.loads(path.read_text())
        yield state
        path.write_text(json.dumps(state, indent=2))


def device_gone(state: dict[str, Any]) -> bool:
    limit = state.get("disconnect_after_benchmarks")
    return limit is not None and state.get("benchmarks_run", 0) >= limit


def visible_devices(state: dict[str, Any]) -> list[dict[str, Any]]:
    if device_gone(state):
        return []
    devs = [dict(d) for d in state["devices"]]
    if state.get("unauthorized"):
        for d in devs:
            d["state"] = "unauthorized"
    return sorted(devs, key=lambda d: d["serial"])


UNAUTHORIZED = (
    "device unauthorized.\n"
    "This adb server's $ADB_VENDOR_KEYS is not set\n"
    "Try 'adb kill-server' if that seems wrong.\n"
    "Otherwise check for a confirmation dialog on your device."
)


def select_device(state: dict[str, Any], serial: str | None) -> tuple[dict[str, Any] | None, str]:
    """Pick the target like adb's acquire_one_transport; returns (device, error)."""
    devs = visible_devices(state)
    if serial is not None:
        match = [d for d in devs if d["serial"] == serial]
        if not match:
            return None, f"device '{serial}' not found"
        dev = match[0]
    elif not devs:
        return None, "no devices/emulators found"
    elif len(devs) > 1:
        return None, "more than one device/emulator"
    else:
        dev = devs[0]
    if dev["state"] == "unauthorized":
        return None, UNAUTHORIZED
    if dev["state"] == "offline":
        return None, "device offline"
    return dev, ""


# --------------------------------------------------------------------------- device filesystem


class Fs:
    """The device filesystem of one serial, rooted in state_dir/fs/<serial>."""

    def __init__(self, dev: dict[str, Any], state: dict[str, Any]) -> None:
        self.root = STATE_DIR / "fs" / dev["serial"]
        self.readable_governors = state.get("governors_readable", True)
        (self.root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        for i, gov in enumerate(dev["governors"]):  # state.json is the truth for sysfs
            f = self.root / f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor"
            if not f.exists() or f.read_text() != gov + "\n":
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(gov + "\n")

    def local(self, path: str) -> Path:
        if not path.startswith("/"):
            path = "/" + path  # adb shell starts in /
        p = (self.root / path.lstrip("/")).resolve()
        root = self.root.resolve()
        return p if p == root or root in p.parents else root

    def denied(self, path: str) -> bool:
        return not self.readable_governors and path.endswith("/cpufreq/scaling_governor")

    def expand(self, arg: str) -> list[str]:
        """mksh globbing: sorted matches, or the word itself when nothing matches."""
        if not any(c in arg for c in "*?["):
            return [arg]
        root = str(self.root.resolve())
        hits = sorted(
            h[len(root) :] for h in glob.glob(str(self.local("/")) + "/" + arg.lstrip("/"))
        )
        return hits or [arg]


# --------------------------------------------------------------------------- shell commands


def sh_cat(fs: Fs, args: list[str]) -> int:
    rc = 0
    for a in args:
        p = fs.local(a)
        if fs.denied(a):
            err(f"cat: {a}: Permission denied")
            rc = 1
        elif not p.exists():
            err(f"cat: {a}: No such file or directory")
            rc = 1
        elif p.is_dir():
            err(f"cat: {a}: Is a directory")
            rc = 1
        else:
            sys.stdout.write(p.read_text(errors="replace"))
    return rc


def sh_grep(fs: Fs, args: list[str]) -> int:
    with_name = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        with_name |= "H" in args[0]
        args = args[1:]
    if not args:
        err("usage: grep [-ABCEFHIL...] PATTERN [FILE...]")
        return 2
    pattern, files = args[0], args[1:]
    if pattern != ".":
        err("grep: stand-in supports only the pattern '.'")
        return 2
    found, rc = False, 1
    for f in files:
        p = fs.local(f)
        if fs.denied(f):
            err(f"grep: {f}: Permission denied")
            rc = 2
            continue
        if not p.is_file():
            err(f"grep: {f}: No such file or directory")
            rc = 2
            continue
        for line in p.read_text(errors="replace").splitlines():
            if line:
                found = True
                out(f"{f}:{line}" if with_name or len(files) > 1 else line)
    return 0 if found and rc != 2 else rc


def sh_ls(fs: Fs, args: list[str]) -> int:
    paths = [a for a in args if not a.startswith("-")] or ["/"]
    rc = 0
    for a in paths:
        p = fs.local(a)
        if not p.exists():
            err(f"ls: {a}: No such file or directory")
            rc = 1
        elif p.is_dir():
            for child in sorted(p.iterdir()):
                out(child.name)
        else:
            out(a)
    return rc


def sh_chmod(fs: Fs, args: list[str]) -> int:
    if len(args) < 2:
        err("chmod: Needs 2 arguments")
        return 1
    mode, rc = args[0], 0
    for a in args[1:]:
        p = fs.local(a)
        if not p.exists():
            err(f"chmod: {a}: No such file or directory")
            rc = 1
        elif mode in ("+x", "a+x", "u+x"):
            p.chmod(p.stat().st_mode | 0o111)
        else:
            try:
                p.chmod(int(mode, 8))
            except ValueError:
                err(f"chmod: bad mode '{mode}'")
                return 1
    return rc


def sh_mkdir(fs: Fs, args: list[str]) -> int:
    parents = "-p" in args
    rc = 0
    for a in (x for x in args if not x.startswith("-")):
        p = fs.local(a)
        try:
            p.mkdir(parents=parents, exist_ok=parents)
        except FileExistsError:
            err(f"mkdir: '{a}': File exists")
            rc = 1
        except FileNotFoundError:
            err(f"mkdir: '{a}': No such file or directory")
            rc = 1
    return rc


def sh_rm(fs: Fs, args: list[str]) -> int:
    flags = "".join(a for a in args if a.startswith("-"))
    rc = 0
    for a in (x for x in args if not x.startswith("-")):
        p = fs.local(a)
        if p.is_dir() and "r" in flags:
            shutil.rmtree(p)
        elif p.is_file():
            p.unlink()
        elif "f" not in flags:
            err(f"rm: {a}: No such file or directory")
            rc = 1
    return rc


def sh_sha256sum(fs: Fs, args: list[str]) -> int:
    import hashlib

    rc = 0
    for a in args:
        p = fs.local(a)
        if not p.is_file():
            err(f"sha256sum: {a}: No such file or directory")
            rc = 1
        else:
            out(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {a}")
    return rc


def sh_getprop(dev: dict[str, Any], args: list[str]) -> int:
    props: dict[str, str] = dev["props"]
    if args:
        out(props.get(args[0], args[1] if len(args) > 1 else ""))
    else:
        for k in sorted(props):
            out(f"[{k}]: [{props[k]}]")
    return 0


def run_shell(state: dict[str, Any], dev: dict[str, Any], words: list[str]) -> int:
    fs = Fs(dev, state)
    argv: list[str] = []
    for w in words:
        argv += fs.expand(w)
    if not argv:
        err("stand-in adb: interactive shell is not supported")
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd == "taskset":
        if len(args) < 2:
            err("usage: taskset [-ap] [mask] [PID | cmd [args...]]")
            return 1
        try:
            int(args[0], 16)
        except ValueError:
            err(f"taskset: bad mask '{args[0]}'")
            return 1
        cmd, args = args[1], args[2:]
    simple = {
        "cat": sh_cat,
        "grep": sh_grep,
        "ls": sh_ls,
        "chmod": sh_chmod,
        "mkdir": sh_mkdir,
        "rm": sh_rm,
        "sha256sum": sh_sha256sum,
    }
    if cmd in simple:
        return simple[cmd](fs, args)
    if cmd == "getprop":
        return sh_getprop(dev, args)
    if cmd == "echo":
        out(" ".join(args))
        return 0
    if "/" in cmd:
        p = fs.local(cmd)
        if not p.is_file():
            err(f"{SH}: {cmd}: inaccessible or not found")
            return 127
        if not p.stat().st_mode & 0o111:  # (root passes os.access)
            err(f"{SH}: {cmd}: can't execute: Permission denied")
            return 126
        if p.name == "benchmark_model":
            with locked_state() as st:
                st["benchmarks_run"] = st.get("benchmarks_run", 0) + 1
            return benchmark_model(fs, args)
        err(f"{SH}: {cmd}: can't execute: Exec format error")
        return 126
    err(f"{SH}: {cmd}: inaccessible or not found")
    return 127


# --------------------------------------------------------------------------- benchmark_model

# (flag, type, default, description) in BenchmarkModel::LogParams order.
_PARAMS: list[tuple[str, type, Any, str]] = [
    ("num_runs", int, 50, "Min num runs"),
    ("min_secs", float, 1.0, "Min runs duration (seconds)"),
    ("max_secs", float, 150.0, "Max runs duration (seconds)"),
    ("run_delay", float, -1.0, "Inter-run delay (seconds)"),
    ("run_frequency", float, -1.0, "Number of prorated runs per second"),
    ("num_threads", int, -1, "Num threads"),
    ("use_caching", bool, False, "Use caching"),
    ("benchmark_name", str, "", "Benchmark name"),
    ("output_prefix", str, "", "Output prefix"),
    ("warmup_runs", int, 1, "Min warmup runs"),
    ("warmup_min_secs", float, 0.5, "Min warmup runs duration (seconds)"),
    ("dry_run", bool, False, "Run w/o invoking kernels"),
    ("report_peak_memory_footprint", bool, False, "Report the peak memory footprint"),
    ("memory_footprint_check_interval_ms", int, 50, "Memory footprint check interval (ms)"),
    ("graph", str, "", "Graph"),
    ("signature_to_run_for", str, "", "Signature to run"),
    ("use_xnnpack", bool, False, "Use xnnpack"),
]


def info(text: str) -> None:
    out("INFO: " + text)


def cpp(v: Any) -> str:
    """How a C++ ostream prints the value (bools as 1/0, doubles like %g)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


class StatWithPercentiles:
    """xla/tsl/util/stats_calculator.h, int64 values (µs)."""

    def __init__(self) -> None:
        self.values: list[int] = []

    def avg(self) -> float:
        # quiet_NaN() of int64 is 0, so an empty stat averages to 0.
        return sum(self.values) / len(self.values) if self.values else 0.0

    def std(self) -> int:
        v = self.values
        if not v or min(v) == max(v):
            return 0
        sq = sum(float(x) * x for x in v)
        return int(math.sqrt(max(0.0, sq / len(v) - self.avg() ** 2)))

    def percentile(self, p: int) -> int:
        if not self.values:
            return 0
        return sorted(self.values)[len(self.values) * p // 100]

    def line(self) -> str:
        v = self.values
        if not v:
            s = "count=0"
        elif min(v) == max(v):
            s = f"count={len(v)} curr={v[-1]}" + ("(all same)" if len(v) > 1 else "")
        else:
            s = (
                f"count={len(v)} first={v[0]} curr={v[-1]} min={min(v)} max={max(v)} "
                f"avg={self.avg():g} std={self.std()}"
            )
        return (
            s + f" p5={self.percentile(5)} median={self.percentile(50)} p95={self.percentile(95)}"
        )


def now_us() -> int:
    return time.perf_counter_ns() // 1000


def rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def benchmark_model(fs: Fs, argv: list[str]) -> int:
    params = {name: default for name, _, default, _ in _PARAMS}
    kinds = {name: kind for name, kind, _, _ in _PARAMS}
    given: set[str] = set()
    unconsumed: list[str] = []
    for a in argv:
        name, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if not eq or name not in kinds:
            unconsumed.append(a)
            continue
        kind = kinds[name]
        try:
            if kind is bool:
                if value not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                params[name] = value in ("true", "1")
            else:
                params[name] = kind(value)
        except ValueError:
            err(f"ERROR: Failed to parse flag '{name}' against argv '{a}'")
            err("ERROR: Benchmarking failed.")
            return 1
        given.add(name)

    info("STARTING!")
    if unconsumed:
        out("WARN: Unconsumed cmdline flags: " + " ".join(unconsumed))
    graph = params["graph"]
    if not graph:
        err("ERROR: Please specify the name of your TF Lite input file with --graph")
        err("ERROR: Benchmarking failed.")
        return 1
    info("Log parameter values verbosely: [0]")
    for name, _, _, desc in _PARAMS:
        if name == "use_xnnpack" and "num_threads" in given:  # the default delegate provider
            info(f"#threads used for CPU inference: [{params['num_threads']}]")
        if name in given or name in ("graph", "signature_to_run_for"):
            info(f"{desc}: [{cpp(params[name])}]")

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    start_rss = rss_kb()
    t0 = now_us()  # Init = LoadModel + InitInterpreter + AllocateTensors
    path = fs.local(graph)
    if not path.is_file():
        err(f"ERROR: Could not open '{graph}'.")
        err("ERROR: The model allocation is null/empty")
        err(f"ERROR: Failed to load model {graph}")
        err("ERROR: Benchmarking failed.")
        return 1

    explicit_off = "use_xnnpack" in given and not params["use_xnnpack"]
    try:
        interp = Interpreter(
            model_path=str(path),
            num_threads=params["num_threads"] if params["num_threads"] > 0 else None,
            experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                if explicit_off
                else OpResolverType.AUTO
            ),
        )
    except ValueError:
        err("ERROR: The model is not a valid Flatbuffer buffer")
        err(f"ERROR: Failed to load model {graph}")
        err("ERROR: Benchmarking failed.")
        return 1
    info(f"Loaded model {graph}")  # (the interpreter itself logs the XNNPACK delegate line)
    try:
        interp.allocate_tensors()
    except RuntimeError:
        err("ERROR: Failed to allocate tensors!")
        err("ERROR: Benchmarking failed.")
        return 1
    init_us = now_us() - t0
    init_rss = rss_kb()
    info(f"The input model file size (MB): {path.stat().st_size / 1e6:g}")
    info(f"Initialized session in {init_us / 1e3:g}ms.")

    rng = np.random.default_rng(random.randrange(2**32))
    inputs = []
    for d in interp.get_input_details():
        dt = np.dtype(d["dtype"])
        if dt.kind == "f":
            data = rng.uniform(-1.0, 1.0, d["shape"]).astype(dt)
        elif dt.kind in "iu":
            lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
            data = rng.integers(max(lo, -128), min(hi, 127), d["shape"], endpoint=True).astype(dt)
        else:
            data = np.zeros(d["shape"], dt)
        inputs.append((d["index"], data))

    def run(n: int, min_secs: float, max_secs: float) -> tuple[StatWithPercentiles, str | None]:
        stats = StatWithPercentiles()
        info(
            f"Running benchmark for at least {n} iterations and at least {min_secs:g} seconds but "
            f"terminate if exceeding {max_secs:g} seconds."
        )
        now = now_us()
        min_finish, max_finish = now + int(min_secs * 1e6), now + int(max_secs * 1e6)
        failure = None
        i = 0
        while (i < n or now < min_finish) and now <= max_finish:
            for index, data in inputs:  # ResetInputsAndOutputs, outside the timed region
                interp.set_tensor(index, data)
            start = now_us()
            try:
                if not params["dry_run"]:
                    interp.invoke()
            except RuntimeError as e:
                failure = str(e)
            stats.values.append(now_us() - start)
            now = now_us()
            i += 1
        info(stats.line() + "\n")
        return stats, failure

    warmup, failure = run(params["warmup_runs"], params["warmup_min_secs"], params["max_secs"])
    if failure is None:
        timed, failure = run(params["num_runs"], params["min_secs"], params["max_secs"])
    if failure is not None:
        err(f"ERROR: {failure.strip()}")
        err("ERROR: Benchmarking failed.")
        return 1
    first = warmup.values[0] if warmup.values else 0
    info(
        f"Inference timings in us: Init: {init_us}, First inference: {first}, "
        f"Warmup (avg): {warmup.avg():g}, Inference (avg): {timed.avg():g}"
    )
    info(
        "Note: as the benchmark tool itself affects memory footprint, the following is only "
        "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion."
    )
    info(
        "Memory footprint delta from the start of the tool (MB): "
        f"init={(init_rss - start_rss) / 1024.0:g} overall={(rss_kb() - start_rss) / 1024.0:g}"
    )
    return 0


# --------------------------------------------------------------------------- adb commands


def cmd_devices(state: dict[str, Any], args: list[str]) -> int:
    long = "-l" in args
    out("List of devices attached")
    for d in visible_devices(state):
        if not long:
            out(f"{d['serial']}\t{d['state']}")
            continue
        line = f"{d['serial']:<22} {d['state']} {d['usb']}"
        if d["state"] == "device":
            model = "".join(c if c.isalnum() else "_" for c in d["model"])
            line += f" product:{d['product']} model:{model} device:{d['device']}"
        out(f"{line} transport_id:{d['transport_id']}")
    out()
    return 0


def cmd_push(state: dict[str, Any], dev: dict[str, Any], args: list[str]) -> int:
    if len(args) < 2:
        err("adb: push requires an argument")
        return 1
    *locals_, remote = args
    fs = Fs(dev, state)
    for local in locals_:
        src = Path(local)
        if not src.exists():
            err(f"adb: error: cannot stat '{local}': No such file or directory")
            return 1
        dst = fs.local(remote)
        if remote.endswith("/") or dst.is_dir():
            dst = dst / src.name
        t0 = time.perf_counter()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)  # adb push keeps the local permission bits
        secs = max(time.perf_counter() - t0, 1e-6)
        size = src.stat().st_size
        out(
            f"{local}: 1 file pushed, 0 skipped. {size / secs / 1e6:.1f} MB/s ({size} bytes in {secs:.3f}s)"
        )
    return 0


def main(argv: list[str]) -> int:
    serial = os.environ.get("ANDROID_SERIAL") or None
    while argv and argv[0].startswith("-"):
        if argv[0] == "-s" and len(argv) > 1:
            serial, argv = argv[1], argv[2:]
        elif argv[0] in ("-d", "-e"):
            argv = argv[1:]
        else:
            err(f"adb: unknown option {argv[0]}")
            return 1
    if not argv:
        err("adb: usage: no command specified")
        return 1
    command, args = argv[0], argv[1:]
    if command == "version":
        out("Android Debug Bridge version 1.0.41")
        out("Version 29.0.6-debian")
        out(f"Installed as {Path(sys.argv[0]).resolve()}")
        return 0
    with locked_state() as state:
        if command == "kill-server":
            state["server_running"] = False
            return 0
        if not state.get("server_running"):
            err("* daemon not running; starting now at tcp:5037")
            err("* daemon started successfully")
            state["server_running"] = True
    if command == "start-server":
        return 0
    if command == "devices":
        return cmd_devices(state, args)
    if command not in ("shell", "push", "get-state", "get-serialno"):
        err(f"adb: unknown command {command}")
        return 1
    dev, problem = select_device(state, serial)
    if dev is None:
        if command == "push":
            out(f"adb: error: failed to get feature set: {problem}")
        else:
            err(f"error: {problem}")
        return 1
    if command == "get-state":
        out(dev["state"])
        return 0
    if command == "get-serialno":
        out(dev["serial"])
        return 0
    if command == "push":
        return cmd_push(state, dev, args)
    # adb joins the words with spaces; the device shell splits them again.
    return run_shell(state, dev, shlex.split(" ".join(args)))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.exit(code)
