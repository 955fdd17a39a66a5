"""The `executorch` backend for real: ExecuTorch's runtime with the XNNPACK delegate.

Blocks are lowered (a few seconds each), then run and timed by ExecuTorch. The kernel
class of every planned layer is read back from the lowered XNNPACK delegates, and the
quantized programs are run to show that their outputs really moved off float.
"""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_backends import _plans, _whole_model, block
from torch import nn

import search_spaces  # noqa: F401  (registers the families)
from latency_tables.backends import BACKENDS, KERNELS, Backend
from latency_tables.backends.common import ConversionError
from latency_tables.backends.executorch import (
    CONV_KERNEL_MAP,
    INSTALL,
    ExecuTorchMissing,
    layer_kernels,
    lowered,
)
from latency_tables.table import LatencyTable
from nas import SPACES
from nas.app.cli import main
from nas.supernet import SpaceEntry
from search_spaces.mobile_unet import FAMILY
from search_spaces.mobile_unet.config import MobileUNetConfig

WARMUP, RUNS = 1, 3
ROOT = Path(__file__).resolve().parents[2]


class TinyLinear(nn.Module):
    """One linear over 16 tokens of width 32."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ComputedWeight(nn.Linear):
    """A linear whose weight is computed in forward: XNNPACK takes only static weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * 2, self.bias)


def make(threads: int = 1) -> Backend:
    return BACKENDS.get("executorch")(threads=threads, warmup=WARMUP, runs=RUNS)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with make() as b:
        yield b


def run_program(program: bytes, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(program).load_method("forward")
    assert method is not None
    return method.execute(list(inputs))[0]


def test_measures_a_conv_block_and_a_linear(backend: Backend) -> None:
    torch.manual_seed(0)
    for module, inputs in (block("conv"), (TinyLinear().eval(), (torch.randn(1, 16, 32),))):
        m = backend.measure(module, inputs, "fp32")
        assert m.n == RUNS
        for v in (m.mean_ms, m.median_ms, m.min_ms):
            assert math.isfinite(v) and v > 0
        assert math.isfinite(m.std_ms) and m.std_ms >= 0


def test_runtime_metadata(backend: Backend) -> None:
    rt = backend.runtime()
    assert rt["runtime"] == "executorch" and rt["delegate"] == "XNNPACK"
    assert rt["version"].split("+")[0] == metadata.version("executorch")
    assert rt["threads"] == "1"
    assert rt["conv_kernel_map"] == "w8->int8,w4->int8,w4a8->int8"
    assert backend.settings() == {"threads": 1, "warmup": WARMUP, "runs": RUNS}
    # the install hint names the version the lock pins
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    assert f"executorch=={metadata.version('executorch')}" in lock
    assert f"executorch=={metadata.version('executorch')} " in INSTALL


def test_kernel_map_and_conv_aliases(backend: Backend) -> None:
    """Every class runs as itself on linears; convs run the integer classes as int8,
    and the aliased conv classes lower to the very program of int8."""
    assert backend.kernel_map == {k: k for k in KERNELS}
    conv, x = block("conv")
    assert layer_kernels(conv, {"conv1": "w4", "conv2": "w4a8"}) == {
        "conv1": "int8",
        "conv2": "int8",
    }
    attn, _ = block("attn")
    assert layer_kernels(attn, "w4") == {"qkv": "w4", "proj": "w4", "ff.0": "w4", "ff.2": "w4"}
    int8 = lowered(conv, x, "int8")
    assert int8.kernels == {"conv1": ["int8"], "conv2": ["int8"]}
    assert all(lowered(conv, x, k) is int8 for k in CONV_KERNEL_MAP)


@pytest.mark.slow  # lowers the conv block twice more (~5 s each on a busy host)
def test_conv_block_runs_each_class_on_xnnpack() -> None:
    conv, x = block("conv")
    with torch.no_grad():
        ref = conv(*x)
    errors = {}
    for k in ("fp32", "fp16", "int8"):
        lw = lowered(conv, x, k)
        assert lw.kernels == {"conv1": [k], "conv2": [k]}
        out = run_program(lw.program, tuple(t.half() for t in x) if k == "fp16" else x)
        errors[k] = (out.float() - ref).abs().max().item()
    assert errors["fp32"] < 1e-5  # float as exported
    assert 1e-5 < errors["fp16"] < 1e-2 and 1e-4 < errors["int8"] < 0.1  # really reduced


@pytest.mark.slow  # two lowerings of mixed plans
def test_mixed_plans_put_each_layer_on_its_kernel(backend: Backend) -> None:
    attn, x = block("attn")
    plan = {"qkv": "w8", "proj": "int8", "ff.0": "w4", "ff.2": "w4a8"}
    assert lowered(attn, x, plan).kernels == {p: [k] for p, k in plan.items()}
    assert backend.measure(attn, x, plan).n == RUNS

    # a conv among linears: its w4 runs int8, an fp16 linear sits between casts
    embed, e = block("embed")
    plan = {"patch": "w4", "linear_1": "fp16", "linear_2": "w8"}
    assert lowered(embed, e, plan).kernels == {
        "patch": ["int8"],
        "linear_1": ["fp16"],
        "linear_2": ["w8"],
    }
    assert backend.measure(embed, e, plan).n == RUNS


@pytest.mark.slow  # lowers a whole (tiny) DiT
def test_whole_model_mixed_plan_runs_each_layer_on_its_kernel(backend: Backend) -> None:
    """A sampled DiT whose to_q/to_v (w4, dynamic) share their input with an fp16 to_k:
    lowered with one XNNPACK partition, that input's shared choose_qparams made it cyclic."""
    module, inputs, spec = _whole_model("test_mobile_dit", 1)
    plan = _plans(module, spec, backend.kernel_map)[0]
    assert {"w4", "fp16", "int8", "w4a8"} <= set(plan.values())
    want = layer_kernels(module, plan)
    assert lowered(module, inputs, plan).kernels == {p: [k] for p, k in want.items()}
    assert backend.measure(module, inputs, plan).n == RUNS


def test_a_layer_xnnpack_refuses_is_a_clear_error(backend: Backend) -> None:
    module = nn.Sequential(ComputedWeight(32, 32)).eval()
    with pytest.raises(ConversionError, match=r"'0': \"fp32: got \['portable'\]\".*static weight"):
        backend.measure(module, (torch.randn(1, 4, 32),), "fp32")


def test_thread_pool_is_sized_and_never_resized_under_a_loaded_program() -> None:
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    module, inputs = TinyLinear().eval(), (torch.randn(1, 16, 32),)
    gc.collect()
    timed = make(threads=1).prepare(module, inputs, "fp32")
    assert _threadpool_get_thread_count() == 1
    with pytest.raises(ConversionError, match=r"has 1 threads.*cannot become 2 threads"):
        make(threads=2).prepare(module, inputs, "fp32")
    assert timed().n == RUNS  # the loaded program still runs on its pool
    del timed
    gc.collect()
    assert make(threads=2).measure(module, inputs, "fp32").n == RUNS
    assert _threadpool_get_thread_count() == 2
    assert make(threads=1).measure(module, inputs, "fp32").n == RUNS
    assert _threadpool_get_thread_count() == 1


def test_missing_executorch_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "executorch", None)  # as if it were not installed
    with pytest.raises(ExecuTorchMissing, match=r"pip install executorch==\d"):
        make()
    opts = ["--backend", "executorch", "--device", "host", "--tables", str(tmp_path)]
    assert main(["latency", "build", "--space", "test_mobile_unet", *opts]) == 2
    assert "pip install executorch==" in capsys.readouterr().err


def test_importing_the_backends_imports_no_executorch() -> None:
    code = (
        "import sys, latency_tables, latency_tables.backends; "
        "from latency_tables.backends import BACKENDS; BACKENDS.get('executorch'); "
        "print('executorch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# One stage of the tiny U-Net, fp32 only: 7 block keys, so the CLI build lowers 7 blocks.
TINY = "test_executorch_unet"
TINY_CONFIG = MobileUNetConfig(
    sample_size=8,
    cross_attention_dim=8,
    context_len=3,
    width_options=((8,),),
    depth_options=((1,),),
    attn_depth_options=((0,),),
    heads_options=((1,),),
    inner_ratios=(1.0,),
    norm_num_groups=4,
    quant_options=("fp32",),
)


@pytest.mark.slow  # lowers 7 blocks
def test_cli_builds_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nas latency build --backend executorch` on a one-stage U-Net (the full
    test_mobile_unet has 255 keys: ~15 min of lowering)."""
    monkeypatch.setitem(SPACES._items, TINY, SpaceEntry(TINY, FAMILY, TINY_CONFIG))
    opts = ["--backend", "executorch", "--device", "host", "--tables", str(tmp_path)]
    speed = ["--threads", "1", "--warmup", "1", "--runs", "2"]
    assert main(["latency", "build", "--space", TINY, *opts, *speed]) == 0
    assert "7 keys needed, 0 already measured, 7 measured now, 0 failed" in capsys.readouterr().out
    assert main(["latency", "coverage", "--space", TINY, *opts]) == 0
    assert "7/7 keys" in capsys.readouterr().out
    table = LatencyTable.load(tmp_path, "host", "executorch")
    assert len(table) == 7 and not table.failed()
    assert all(e.measurement.n == 2 and e.measurement.min_ms > 0 for e in table.entries())
    meta = table.meta
    assert meta["runtime"]["runtime"] == "executorch" and meta["runtime"]["delegate"] == "XNNPACK"
    assert meta["runtime"]["conv_kernel_map"] == "w8->int8,w4->int8,w4a8->int8"
    assert meta["kernel_map"] == {k: k for k in KERNELS}
    assert meta["settings"] == {"threads": 1, "warmup": 1, "runs": 2}
