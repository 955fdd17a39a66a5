"""AdbClient against the stand-in adb + phone, and its parsers on literal tool output."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from stand_in import device, load_state, save_state, update_state

from latency_tables.adb import (
    AdbClient,
    DeviceError,
    parse_benchmark_output,
    parse_devices,
    parse_getprop,
    parse_stats_line,
)
from latency_tables.measurement import Measurement

REMOTE = "/data/local/tmp/mqnas"
SECOND = "R5CX20ABCDE"
GALAXY_PROPS = {  # no ro.soc.model: the fingerprint falls back to ro.board.platform
    "ro.product.model": "SM-S921B",
    "ro.product.manufacturer": "samsung",
    "ro.product.name": "e1sxeea",
    "ro.product.device": "e1s",
    "ro.board.platform": "s5e9945",
    "ro.hardware": "s5e9945",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.fingerprint": "samsung/e1sxeea/e1s:14/UP1A.231005.007/S921BXXU1AXB5:user/release-keys",
}


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import litert_torch  # slow import (several seconds): only here
    import torch

    block = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 1)
    ).eval()
    path = tmp_path_factory.mktemp("model") / "block.tflite"
    with warnings.catch_warnings():  # torch's pytree deprecations, raised inside the converter
        warnings.simplefilter("ignore", FutureWarning)
        litert_torch.convert(block, (torch.randn(1, 8, 16, 16),)).export(str(path))
    return path


def add_second_device(phone: SimpleNamespace) -> None:
    state = load_state(phone.state_dir)
    state["devices"].append(
        device(SECOND, props=GALAXY_PROPS, governors=["energy_aware"] * 8, transport_id=2)
    )
    save_state(phone.state_dir, state)


def ready(phone: SimpleNamespace, model: Path, **kw: object) -> tuple[AdbClient, str]:
    client = AdbClient(**kw)  # type: ignore[arg-type]
    client.ensure_benchmark_binary(phone.binary, REMOTE)
    client.push(model, f"{REMOTE}/{model.name}")
    return client, f"{REMOTE}/{model.name}"


# --------------------------------------------------------------------------- against the stand-in


def test_devices_and_fingerprint(phone: SimpleNamespace) -> None:
    client = AdbClient()
    (dev,) = client.devices()  # the first call also prints "* daemon started" on stderr
    assert (dev.serial, dev.state, dev.model, dev.product, dev.transport_id) == (
        phone.serial,
        "device",
        "Pixel_8",
        "shiba",
        1,
    )
    fp = client.fingerprint()
    assert fp.model == "Pixel 8" and fp.manufacturer == "Google" and fp.soc == "Tensor G3"
    assert (fp.android_version, fp.sdk, fp.abi, fp.serial) == (
        "14",
        "34",
        "arm64-v8a",
        phone.serial,
    )
    assert fp.build_fingerprint.startswith("google/shiba/shiba:14/")
    assert client.serial == phone.serial  # pinned after the first device command


def test_cpu_governors(phone: SimpleNamespace) -> None:
    assert AdbClient().cpu_governors() == {i: "sched_pixel" for i in range(9)}
    # 12 CPUs: the shell's glob order is cpu0, cpu1, cpu10, cpu11, cpu2 ... — still mapped right.
    govs = [f"gov{i}" for i in range(12)]
    update_state(phone.state_dir, devices=[device(phone.serial, governors=govs)])
    assert AdbClient().cpu_governors() == dict(enumerate(govs))
    update_state(phone.state_dir, governors_readable=False)
    assert AdbClient().cpu_governors() == {}


def test_push_and_benchmark(phone: SimpleNamespace, tflite_model: Path) -> None:
    client, graph = ready(phone, tflite_model)
    result = client.benchmark(graph, num_threads=1, warmup_runs=3, num_runs=30, taskset_mask="f0")
    assert result.n == 30
    assert result.mean_ms > 0 and result.median_ms > 0 and result.std_ms >= 0
    assert result.init_ms > 0 and result.first_ms > 0 and result.warmup_avg_ms > 0
    assert result.p5_ms is not None and result.p95_ms is not None
    assert result.p5_ms <= result.median_ms <= result.p95_ms
    # |mean - median| <= std for any sample; 2 µs slack for the tool's integer µs.
    assert abs(result.mean_ms - result.median_ms) <= result.std_ms + 0.002
    assert "Inference timings in us" in result.raw
    m = result.to_measurement()
    assert isinstance(m, Measurement) and (m.mean_ms, m.n) == (result.mean_ms, 30)
    # Already on the device: no local binary needed any more.
    assert client.ensure_benchmark_binary(None, REMOTE) == f"{REMOTE}/benchmark_model"
    xnn_off = client.benchmark(graph, num_threads=2, warmup_runs=1, num_runs=5, use_xnnpack=False)
    assert xnn_off.n == 5


def test_missing_benchmark_binary_teaches(phone: SimpleNamespace) -> None:
    with pytest.raises(DeviceError, match="android_aarch64_benchmark_model"):
        AdbClient().ensure_benchmark_binary(None, REMOTE)


def test_missing_graph_raises(phone: SimpleNamespace) -> None:
    client = AdbClient()
    client.ensure_benchmark_binary(phone.binary, REMOTE)
    with pytest.raises(
        DeviceError, match="Could not open '/data/local/tmp/mqnas/nope.tflite'"
    ) as info:
        client.benchmark(f"{REMOTE}/nope.tflite", num_threads=1, warmup_runs=1, num_runs=2)
    assert "pushed" in str(info.value)


def test_two_devices_need_a_serial(phone: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    add_second_device(phone)
    with pytest.raises(DeviceError, match="--serial") as info:
        AdbClient().fingerprint()
    assert phone.serial in str(info.value) and SECOND in str(info.value)
    fp = AdbClient(serial=SECOND).fingerprint()
    assert (fp.serial, fp.model, fp.soc) == (SECOND, "SM-S921B", "s5e9945")
    assert AdbClient(serial=SECOND).cpu_governors() == {i: "energy_aware" for i in range(8)}
    assert AdbClient(serial=phone.serial).fingerprint().soc == "Tensor G3"
    monkeypatch.setenv("ANDROID_SERIAL", SECOND)  # adb's own default, honoured too
    assert AdbClient().fingerprint().serial == SECOND
    with pytest.raises(DeviceError, match="not found") as info:
        AdbClient(serial="NOPE123").getprop()
    assert phone.serial in str(info.value)  # lists what is connected


def test_disconnect_mid_sequence(phone: SimpleNamespace, tflite_model: Path) -> None:
    update_state(phone.state_dir, disconnect_after_benchmarks=2)
    client, graph = ready(phone, tflite_model)
    for _ in range(2):
        assert client.benchmark(graph, num_threads=1, warmup_runs=1, num_runs=3).n == 3
    with pytest.raises(DeviceError, match="not found") as info:
        client.benchmark(graph, num_threads=1, warmup_runs=1, num_runs=3)
    msg = str(info.value)
    assert phone.serial in msg and "cable" in msg and "disconnected" in msg
    with pytest.raises(DeviceError, match="not found"):
        client.push(tflite_model, f"{REMOTE}/again.tflite")
    assert client.devices() == []


def test_unauthorized_teaches(phone: SimpleNamespace) -> None:
    update_state(phone.state_dir, unauthorized=True)
    (dev,) = AdbClient().devices()
    assert dev.state == "unauthorized" and dev.model == ""
    for client in (AdbClient(), AdbClient(serial=phone.serial)):
        with pytest.raises(DeviceError, match="unauthorized") as info:
            client.fingerprint()
        assert "Allow USB debugging" in str(info.value) and "adb kill-server" in str(info.value)


def test_offline_and_no_device(phone: SimpleNamespace) -> None:
    update_state(phone.state_dir, devices=[device(phone.serial, state="offline")])
    with pytest.raises(DeviceError, match="offline.*replug"):
        AdbClient(serial=phone.serial).getprop()
    update_state(phone.state_dir, devices=[])
    with pytest.raises(DeviceError, match="no Android device.*USB debugging"):
        AdbClient().getprop()


def test_adb_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="apt-get install adb") as info:
        AdbClient().devices()
    assert "platform-tools" in str(info.value)


# --------------------------------------------------------------------------- parsers on literal output

# LiteRT benchmark_model (StatWithPercentiles, "INFO: " prefix from tools/logging.h).
NEW_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Min runs duration (seconds): [0]
INFO: Num threads: [4]
INFO: Min warmup runs: [10]
INFO: Graph: [/data/local/tmp/mqnas/block.tflite]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [4]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/mqnas/block.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.00752
INFO: Initialized session in 4.537ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=365 first=1566 curr=1370 min=1351 max=1566 avg=1387.05 std=31 p5=1355 median=1380 p95=1441

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=727 first=1381 curr=1368 min=1349 max=1714 avg=1376.28 std=28 p5=1353 median=1370 p95=1420

INFO: Inference timings in us: Init: 4537, First inference: 1566, Warmup (avg): 1387.05, Inference (avg): 1376.28
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.23047 overall=9.95703
"""

# TensorFlow <= 2.x benchmark_model (Stat without percentiles, no log prefix).
OLD_OUTPUT = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/mobilenet_quant_v1_224.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/mobilenet_quant_v1_224.tflite
The input model file size (MB): 4.27635
Initialized session in 2.158ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=30 first=28391 curr=16340 min=16161 max=28391 avg=16823.7 std=2197

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=62 first=16371 curr=16079 min=15993 max=16500 avg=16161.4 std=96

Inference timings in us: Init: 2158, First inference: 28391, Warmup (avg): 16823.7, Inference (avg): 16161.4
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=3.25781 overall=10.3867
"""


def test_parse_benchmark_output_with_percentiles() -> None:
    r = parse_benchmark_output(NEW_OUTPUT)
    assert r.n == 727
    assert math.isclose(r.mean_ms, 1.37628) and math.isclose(r.median_ms, 1.370)
    assert math.isclose(r.std_ms, 0.028) and math.isclose(r.p5_ms or 0, 1.353)
    assert math.isclose(r.p95_ms or 0, 1.420)
    assert (r.init_ms, r.first_ms) == (pytest.approx(4.537), pytest.approx(1.566))
    assert math.isclose(r.warmup_avg_ms, 1.38705)
    assert math.isclose(r.min_ms, 1.349)  # the timed block's min, not the warm-up's
    assert r.to_measurement() == Measurement(r.mean_ms, r.median_ms, r.std_ms, 727, r.min_ms)


def test_parse_benchmark_output_without_percentiles() -> None:
    r = parse_benchmark_output(OLD_OUTPUT)
    assert r.n == 62
    assert math.isclose(r.mean_ms, 16.1614) and r.median_ms == r.mean_ms  # no median printed
    assert math.isclose(r.std_ms, 0.096) and r.p5_ms is None and r.p95_ms is None
    assert math.isclose(r.first_ms, 28.391) and math.isclose(r.init_ms, 2.158)
    assert math.isclose(r.min_ms, 15.993)


def test_parse_stats_line_variants() -> None:
    assert parse_stats_line("INFO: count=5 curr=1100(all same) p5=1100 median=1100 p95=1100") == {
        "count": 5,
        "curr": 1100,
        "avg": 1100,
        "std": 0.0,
        "p5": 1100,
        "median": 1100,
        "p95": 1100,
    }
    assert parse_stats_line("count=1 curr=22133") == {
        "count": 1,
        "curr": 22133,
        "avg": 22133,
        "std": 0.0,
    }
    big = parse_stats_line(
        "count=3 first=1234567 curr=1234000 min=1234000 max=1234567 avg=1.23436e+06 std=267"
    )
    assert big is not None and big["avg"] == pytest.approx(1.23436e6)
    assert parse_stats_line("curr=10 count=2 min=9 max=10 avg=9.5 std=0")["count"] == 2  # type: ignore[index]
    assert parse_stats_line("INFO: Loaded model x.tflite") is None


def test_parse_benchmark_output_failure_shows_tail() -> None:
    failed = (
        "INFO: STARTING!\nINFO: Graph: [/data/local/tmp/x.tflite]\n"
        "ERROR: Could not open '/data/local/tmp/x.tflite'.\n"
        "ERROR: The model allocation is null/empty\n"
        "ERROR: Failed to load model /data/local/tmp/x.tflite\nERROR: Benchmarking failed.\n"
    )
    with pytest.raises(DeviceError, match=r"(?s)did not print its timings.*Failed to load model"):
        parse_benchmark_output(failed)


def test_parse_devices_and_getprop() -> None:
    text = (
        "List of devices attached\n"
        "38111FDJH00ABC         device usb:3-1 product:shiba model:Pixel_8 device:shiba transport_id:4\n"
        "0123456789ABCDEF       unauthorized usb:3-2 transport_id:5\n"
        "emulator-5554          offline transport_id:6\n"
        "R5CX20ABCDE            no permissions (user in plugdev group; are your udev rules wrong?); "
        "see [http://developer.android.com/tools/device.html] usb:1-1 transport_id:7\n"
        "\n"
    )
    devs = parse_devices(text)
    assert [(d.serial, d.state) for d in devs] == [
        ("38111FDJH00ABC", "device"),
        ("0123456789ABCDEF", "unauthorized"),
        ("emulator-5554", "offline"),
        ("R5CX20ABCDE", "no permissions"),
    ]
    assert (devs[0].model, devs[0].device, devs[0].transport_id, devs[0].usb) == (
        "Pixel_8",
        "shiba",
        4,
        "usb:3-1",
    )
    assert devs[3].transport_id == 7
    assert (
        parse_devices("List of devices attached\n38111FDJH00ABC\tdevice\n\n")[0].state == "device"
    )
    props = parse_getprop(
        "[ro.product.model]: [Pixel 8]\n[ro.soc.model]: [Tensor G3]\n[empty.prop]: []\n"
        "[multi.line]: [first\nsecond]\n[ro.build.version.sdk]: [34]\n"
    )
    assert props == {
        "ro.product.model": "Pixel 8",
        "ro.soc.model": "Tensor G3",
        "empty.prop": "",
        "multi.line": "first\nsecond",
        "ro.build.version.sdk": "34",
    }
