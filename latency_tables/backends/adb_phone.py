"""`adb` backend: time `.tflite` blocks on an Android phone with `benchmark_model`.

Each measurement converts the block with `tflite.to_tflite` (the same
conversion and quantization recipes as the host `tflite` backend), writes it
to a local work dir, pushes it to `remote_dir` on the phone, runs LiteRT's
`benchmark_model` there (XNNPACK, `threads`, `warmup`, `runs`, optionally
under `taskset MASK`) and removes it again. The phone's fingerprint
(getprop) and CPU governors describe the table; the benchmark binary's
sha256 on the device is the runtime version (benchmark_model prints none).

Options: `serial` (default: $ANDROID_SERIAL or the only device),
`benchmark_binary` (local path of an `android_aarch64_benchmark_model`,
pushed when the phone lacks one), `remote_dir` (default
`/data/local/tmp/mqnas`), `taskset` (hex CPU mask, e.g. "f0" for the big
cores), `adb` (the adb executable), `work_dir` (local; default a temp dir).

Kernels: as the `tflite` backend, except fp16, which is real here: its
layers get fp16 weights and benchmark_model runs with
`--xnnpack_force_fp16=true` (fp16 arithmetic on ARMv8.2+ cores). That flag
applies to every float op of the model, so a plan mixing fp16 and fp32
layers cannot be measured and raises `ConversionError`.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from latency_tables.adb import DEFAULT_REMOTE_DIR, AdbClient
from latency_tables.backends.base import BACKENDS, Backend, Plan
from latency_tables.backends.common import ConversionError, resolve_plan
from latency_tables.backends.tflite import KERNEL_MAP as TFLITE_KERNEL_MAP
from latency_tables.backends.tflite import litert_versions, to_tflite
from latency_tables.measurement import Measurement

log = logging.getLogger(__name__)

KERNEL_MAP = {**TFLITE_KERNEL_MAP, "fp16": "fp16"}
FORCE_FP16 = "--xnnpack_force_fp16=true"
# Options that locate things but do not change the numbers: kept out of settings().
_LOCATORS = ("serial", "benchmark_binary", "remote_dir", "adb", "work_dir")


@BACKENDS.register("adb")
class AdbPhoneBackend(Backend):
    """LiteRT `benchmark_model` on a phone over adb."""

    name = "adb"
    kernel_map = KERNEL_MAP
    one_float_precision = True  # --xnnpack_force_fp16 is model-wide

    def __init__(self, threads: int = 1, warmup: int = 10, runs: int = 50, **options: Any) -> None:
        options.setdefault("remote_dir", DEFAULT_REMOTE_DIR)
        options.setdefault("taskset", None)
        super().__init__(threads, warmup, runs, **options)
        self._client: AdbClient | None = None
        self._binary: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # ---- device

    @property
    def client(self) -> AdbClient:
        if self._client is None:
            self._client = AdbClient(
                adb=self.options.get("adb") or "adb", serial=self.options.get("serial")
            )
        return self._client

    def binary(self) -> str:
        """Remote path of benchmark_model, pushed from `benchmark_binary` if missing."""
        if self._binary is None:
            self._binary = self.client.ensure_benchmark_binary(
                self.options.get("benchmark_binary"), self.options["remote_dir"]
            )
        return self._binary

    def fingerprint(self) -> dict[str, str]:
        fp = self.client.fingerprint().to_dict()
        governors = self.client.cpu_governors()
        fp["cpu_governors"] = ",".join(f"cpu{i}={g}" for i, g in sorted(governors.items()))
        return fp

    def runtime(self) -> dict[str, str]:
        remote = self.binary()
        out = self.client.shell("sha256sum", remote, check=False).split()
        digest = out[0] if out and len(out[0]) == 64 else ""
        return {
            "runtime": "tflite-benchmark_model",
            "version": f"sha256:{digest[:16]}" if digest else "unknown (no sha256sum on device)",
            "binary": remote,
            **litert_versions(),
        }

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in super().settings().items() if k not in _LOCATORS}

    # ---- measuring

    def _work_dir(self) -> Path:
        if self.options.get("work_dir"):
            path = Path(self.options["work_dir"])
            path.mkdir(parents=True, exist_ok=True)
            return path
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mqnas-adb-")
        return Path(self._tmp.name)

    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        kernels = resolve_plan(module, plan, self.kernel_map)
        fp16 = "fp16" in kernels.values()
        if fp16 and "fp32" in kernels.values():
            raise ConversionError(
                "benchmark_model's --xnnpack_force_fp16 runs every float op in fp16, so a plan "
                "mixing fp16 and fp32 layers cannot be measured on the phone "
                f"(fp32: {sorted(p for p, k in kernels.items() if k == 'fp32')}); "
                "measure uniform fp16 plans"
            )
        model = to_tflite(module, inputs, kernels)
        name = f"block_{hashlib.sha256(model).hexdigest()[:16]}.tflite"
        local = self._work_dir() / name
        local.write_bytes(model)
        remote = f"{self.options['remote_dir'].rstrip('/')}/{name}"
        self.binary()
        try:
            self.client.push(local, remote)
            result = self.client.benchmark(
                remote,
                num_threads=self.threads,
                warmup_runs=self.warmup,
                num_runs=self.runs,
                taskset_mask=self.options["taskset"],
                extra_args=[FORCE_FP16] if fp16 else (),
            )
        finally:
            local.unlink(missing_ok=True)
        self.client.shell("rm", "-f", remote, check=False)
        log.debug("%s on %s: %.4f ms", name, self.client.serial, result.median_ms)
        return result.to_measurement()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
