"""Every registered measurement backend on two tiny blocks; quantized paths really quantize.

The phone backend (`adb`) runs against the stand-in adb (tests/latency_tables/stand_in),
whose `benchmark_model` runs the pushed `.tflite` with LiteRT on this host.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from latency_tables.backends import BACKENDS, KERNELS, Backend
from latency_tables.backends.common import ConversionError

WARMUP, RUNS = 2, 5


class TinyConv(nn.Module):
    """A ResNet-ish conv block: conv → GroupNorm → SiLU → conv at 8×8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.norm(self.conv1(x))))


class TinyAttn(nn.Module):
    """A single-head attention + MLP block over 16 tokens of width 32."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)
        # a ModuleList (never called itself), as diffusers' to_out / ff.net
        self.ff = nn.ModuleList([nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1)
        x = x + self.proj(attn @ v)
        h = x
        for layer in self.ff:
            h = layer(h)
        return x + h


class TinyEmbed(nn.Module):
    """Patch conv with one input channel, then linears on a 2-D input (Gemm in ONNX)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 16, 2, stride=2)
        self.linear_1 = nn.Linear(256, 32)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(32, 64)  # its output is the block's output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.patch(x).flatten(1))))


def block(kind: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    if kind == "conv":
        return TinyConv().eval(), (torch.randn(1, 8, 8, 8),)
    if kind == "embed":
        return TinyEmbed().eval(), (torch.randn(1, 1, 8, 8),)
    return TinyAttn().eval(), (torch.randn(1, 16, 32),)


def make(name: str, phone: SimpleNamespace | None = None, **options: Any) -> Backend:
    if name == "adb":
        assert phone is not None
        options.setdefault("benchmark_binary", str(phone.binary))
    return BACKENDS.get(name)(threads=1, warmup=WARMUP, runs=RUNS, **options)


@pytest.fixture(params=BACKENDS.names())
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    phone = request.getfixturevalue("phone") if request.param == "adb" else None
    with make(request.param, phone) as b:
        yield b


# --------------------------------------------------------------------------- every backend


@pytest.mark.parametrize("kind", ["conv", "attn"])
def test_measures_fp32(backend: Backend, kind: str) -> None:
    module, inputs = block(kind)
    m = backend.measure(module, inputs, "fp32")
    assert m.mean_ms > 0 and m.median_ms > 0 and m.std_ms >= 0
    assert m.n == RUNS


def test_kernel_map_and_provenance(backend: Backend) -> None:
    km = backend.kernel_map
    assert set(km) == set(KERNELS) and set(km.values()) <= set(KERNELS)
    assert km["fp32"] == "fp32"
    assert all(km[km[k]] == km[k] for k in KERNELS)  # an alias is itself really run
    rt = backend.runtime()
    assert rt["runtime"] and rt["version"]
    fp, settings = backend.fingerprint(), backend.settings()
    assert fp and all(isinstance(v, str) for v in fp.values())
    assert (settings["threads"], settings["warmup"], settings["runs"]) == (1, WARMUP, RUNS)


def test_unknown_kernel_class_is_a_clear_error(backend: Backend) -> None:
    module, inputs = block("conv")
    with pytest.raises(ValueError, match=r"unknown kernel class.*int3.*fp32"):
        backend.measure(module, inputs, "int3")
    with pytest.raises(ValueError, match=r"unknown kernel class.*w2"):
        backend.measure(module, inputs, {"conv1": "w2"})
    with pytest.raises(ValueError, match=r"conv9.*not conv/linear layers.*conv1"):
        backend.measure(module, inputs, {"conv9": "int8"})


# --------------------------------------------------------------------------- torch


def test_torch_aliases_on_cpu_and_restores_threads() -> None:
    b = make("torch")
    assert b.kernel_map["fp16"] == "fp32" and b.kernel_map["int8"] == "fp32"
    assert b.runtime()["device"] == "cpu"
    before = torch.get_num_threads()
    module, inputs = block("attn")
    assert b.measure(module, inputs, "fp16").n == RUNS  # runs as fp32
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------- onnxruntime


def _ops(model: Any) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _optimized_ops(model: Any, tmp_path: Path) -> list[str]:
    """Op types after onnxruntime's graph optimizations (QDQ fusion) at level ALL."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(so.optimized_model_filepath))


def _weight_source(model: Any, node_name_scope: str) -> str:
    """Op type producing the weight input of the Conv/MatMul owned by a module path
    ("initializer" when the float weight is stored as is)."""
    from latency_tables.backends.onnxruntime import layer_nodes

    inits = {i.name for i in model.graph.initializer}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    (name,) = layer_nodes(model, [node_name_scope])[node_name_scope]
    (node,) = [n for n in model.graph.node if n.name == name]
    w = node.input[1]
    return "initializer" if w in inits else producers[w]


def test_onnxruntime_int8_is_static_qdq(tmp_path: Path) -> None:
    from latency_tables.backends.onnxruntime import to_onnx

    module, inputs = block("conv")
    model = to_onnx(module, inputs, "int8")
    ops = _ops(model)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert _weight_source(model, "conv1") == _weight_source(model, "conv2") == "DequantizeLinear"
    assert _optimized_ops(model, tmp_path).count("QLinearConv") == 2  # real int8 kernels
    b = make("onnxruntime")
    assert b.measure(module, inputs, "int8").n == RUNS
    assert b.kernel_map["w4a8"] == "int8" and b.kernel_map["fp16"] == "fp32"


def test_onnxruntime_per_layer_plans(tmp_path: Path) -> None:
    from latency_tables.backends.onnxruntime import to_onnx

    module, inputs = block("conv")
    model = to_onnx(module, inputs, {"conv1": "int8"})
    assert _weight_source(model, "conv1") == "DequantizeLinear"
    assert _weight_source(model, "conv2") == "initializer"  # fp32 layer untouched
    assert _optimized_ops(model, tmp_path).count("QLinearConv") == 1
    # Conv layers of a w4 plan run w8 (ConvInteger): no 4-bit conv in onnxruntime.
    assert _ops(to_onnx(module, inputs, {"conv2": "w4"})).count("ConvInteger") == 1

    attn, x = block("attn")
    mixed = to_onnx(attn, x, {"qkv": "w8", "ff.2": "w4", "proj": "int8"})
    ops = _ops(mixed)
    assert ops.count("MatMulInteger") == 1 and ops.count("MatMulNBits") == 1
    assert _weight_source(mixed, "proj") == "DequantizeLinear"
    assert _weight_source(mixed, "ff.0") == "initializer"
    # the attention matmuls (q·kᵀ, a·v) are not layers and stay float
    assert ops.count("MatMul") == 4  # ff.0, proj (QDQ) and the two attention matmuls
    assert make("onnxruntime").measure(attn, x, {"qkv": "w8", "ff.2": "w4"}).n == RUNS


def test_onnxruntime_linears_on_2d_inputs(tmp_path: Path) -> None:
    """Gemm nodes (a linear on a 2-D input) are rewritten as MatMul so w4/w8 really apply;
    the fp32 linear_2 shares its FX node name "linear_1" with the module path linear_1."""
    from latency_tables.backends.onnxruntime import layer_nodes, to_onnx

    embed, x = block("embed")
    ops = _ops(to_onnx(embed, x, {"linear_1": "w4", "patch": "w4"}))
    assert ops.count("MatMulNBits") == 1 and ops.count("ConvInteger") == 1
    # linear_2 stays an untouched float Gemm (quantize_dynamic would split every Gemm)
    assert "MatMulInteger" not in ops and "MatMul" not in ops and ops.count("Gemm") == 1
    ops = _ops(to_onnx(embed, x, {"linear_2": "w8"}))
    assert ops.count("MatMulInteger") == 1 and ops.count("Gemm") == 1 and "Conv" in ops
    # int8 Gemm stays a QDQ Gemm (→ QGemm) when a w8 pass runs on the same graph
    mixed = to_onnx(embed, x, {"linear_1": "int8", "patch": "w4", "linear_2": "w8"})
    assert _weight_source(mixed, "linear_1") == "DequantizeLinear"
    assert {"QGemm", "ConvInteger"} <= set(_optimized_ops(mixed, tmp_path))
    float_model = to_onnx(embed, x, "fp32")
    nodes = layer_nodes(float_model, ["linear_1", "linear_2"])
    assert len(nodes["linear_1"]) == len(nodes["linear_2"]) == 1
    assert nodes["linear_1"] != nodes["linear_2"]


def test_onnxruntime_torchscript_exporter_takes_uniform_plans_only() -> None:
    from latency_tables.backends.onnxruntime import to_onnx

    module, inputs = block("conv")
    ops = _ops(to_onnx(module, inputs, "int8", exporter="torchscript"))
    assert ops.count("Conv") == 2 and "QuantizeLinear" in ops
    with pytest.raises(ConversionError, match="uniform plans"):
        to_onnx(module, inputs, {"conv1": "int8"}, exporter="torchscript")


# --------------------------------------------------------------------------- tflite


def _tensors(model: bytes) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model).get_tensor_details()


def _weight_dtypes(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], model: bytes
) -> dict[str, str]:
    """Layer path → dtype of its weight tensor in `model` (layers found by weight matching)."""
    from latency_tables.backends.tflite import layer_ops, to_tflite

    layers = [n for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ops = layer_ops(to_tflite(module, inputs, "fp32"), module, inputs, layers)
    dtypes = {t["name"]: np.dtype(t["dtype"]).name for t in _tensors(model)}
    return {p: dtypes[op.weight] for p, op in ops.items()}


def test_tflite_recipes_quantize() -> None:
    from latency_tables.backends.tflite import to_tflite

    module, inputs = block("conv")
    fp32 = to_tflite(module, inputs, "fp32")
    assert set(_weight_dtypes(module, inputs, fp32).values()) == {"float32"}
    for kernel in ("int8", "w8", "w4", "w4a8"):
        q = to_tflite(module, inputs, kernel)
        assert q != fp32 and len(q) < len(fp32), kernel
        # (int4 weights show as int8 in the interpreter)
        assert _weight_dtypes(module, inputs, q) == {"conv1": "int8", "conv2": "int8"}, kernel
    int8 = to_tflite(module, inputs, "int8")
    assert len(to_tflite(module, inputs, "w4a8")) < len(int8)  # int4 weights are packed
    acts = [t for t in _tensors(int8) if t["shape"].tolist() == [1, 8, 8, 16]]
    assert any(np.dtype(t["dtype"]) == np.int8 for t in acts)  # int8 activations too
    fp16 = to_tflite(module, inputs, "fp16")
    assert _weight_dtypes(module, inputs, fp16) == {"conv1": "float16", "conv2": "float16"}

    one = to_tflite(module, inputs, {"conv1": "int8"})
    assert _weight_dtypes(module, inputs, one) == {"conv1": "int8", "conv2": "float32"}

    attn, x = block("attn")
    mixed = to_tflite(attn, x, {"qkv": "w8", "proj": "int8", "ff.2": "fp16"})
    assert _weight_dtypes(attn, x, mixed) == {
        "qkv": "int8",
        "proj": "int8",
        "ff.0": "float32",
        "ff.2": "float16",
    }


def test_tflite_int4_falls_back_where_litert_has_none() -> None:
    """A 1-input-channel conv becomes DEPTHWISE_CONV_2D, which has no int4 recipe: w4 runs w8."""
    from latency_tables.backends.tflite import OP_KERNEL_MAP, layer_ops, to_tflite

    embed, x = block("embed")
    fp32 = to_tflite(embed, x, "fp32")
    assert layer_ops(fp32, embed, x, ["patch"])["patch"].op_type == "DEPTHWISE_CONV_2D"
    assert OP_KERNEL_MAP["DEPTHWISE_CONV_2D"] == {"w4": "w8", "w4a8": "int8"}
    w4 = to_tflite(embed, x, "w4")
    assert set(_weight_dtypes(embed, x, w4).values()) == {"int8"}
    assert len(w4) < len(to_tflite(embed, x, "w8"))  # the linears really are int4
    assert "DEPTHWISE_CONV_2D" in make("tflite").runtime()["op_kernel_map"]


def test_tflite_check_tells_kernel_classes_apart() -> None:
    """Weights that left float are not enough: int8 needs int8 activations, w4 int4 weights."""
    from latency_tables.backends.tflite import _check_quantized, layer_ops, to_tflite

    module, inputs = block("conv")
    ops = layer_ops(to_tflite(module, inputs, "fp32"), module, inputs, ["conv1", "conv2"])
    w8 = to_tflite(module, inputs, "w8")
    _check_quantized(w8, ops, {"conv1": "w8", "conv2": "w8"})
    with pytest.raises(ConversionError, match=r"conv1.*int8.*FLOAT32.*INT8.*conv2.*w4"):
        _check_quantized(w8, ops, {"conv1": "int8", "conv2": "w4"})


def test_tflite_measures_quantized_kernels() -> None:
    b = make("tflite")
    assert b.kernel_map["fp16"] == "fp32"  # fp16 weights run as fp32 on this host's XNNPACK
    attn, x = block("attn")
    for plan in ("int8", {"qkv": "w4", "ff.2": "w4a8"}):
        m = b.measure(attn, x, plan)
        assert m.n == RUNS and m.median_ms > 0


# --------------------------------------------------------------------------- whole models

# (space, seed): a random sample's spec mixes int8 / w4 / w4a8 / fp16 / fp32 per layer;
# test_mobile_unet's seed 3 has int8 Gemms (time embedding, time_emb_proj) next to w4 convs.
WHOLE = [("test_mobile_unet", 3), ("test_mobile_dit", 1)]


def _whole_model(space: str, seed: int) -> tuple[nn.Module, tuple[torch.Tensor, ...], Any]:
    """A standalone model of a random sample (as `end_to_end_runner` builds it) and its spec."""
    import search_spaces  # noqa: F401  (registers the spaces)
    from nas import SPACES

    entry = SPACES.get(space)
    sp = entry.space()
    spec = sp.freeze(sp.sample(seed))
    torch.manual_seed(0)
    module, inputs = entry.family.standalone_model(entry.config, sp, spec.sample_dict, 1)
    return module, inputs, spec


def _plans(module: nn.Module, spec: Any, kernel_map: dict[str, str]) -> list[dict[str, str]]:
    """The spec's per-layer plan (as `end_to_end_runner` makes it), then every kernel
    class in turn over the same layers (w8 too, which the test spaces do not sample)."""
    from latency_tables.kernels import kernel_of

    by_spec = {module.PREFIX + la.path: kernel_map[kernel_of(la.quant)] for la in spec.layers}
    in_turn = {p: kernel_map[KERNELS[i % len(KERNELS)]] for i, p in enumerate(by_spec)}
    return [by_spec, in_turn]


def _onnx_layer_kernels(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], model: Any, paths: list[str]
) -> dict[str, str]:
    """Module path → kernel class its node runs in `model`: its float node found by module
    scope, then (by name) a node reading a DequantizeLinear weight (int8), a ConvInteger /
    MatMulInteger (w8), a MatMulNBits (w4) or the untouched float op (fp32)."""
    from latency_tables.backends.onnxruntime import export_onnx, layer_nodes

    nodes = layer_nodes(export_onnx(module, inputs), paths)
    by_name = {n.name: n for n in model.graph.node}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    found: dict[str, str] = {}
    for path in paths:
        (name,) = nodes[path]
        if name + "_Q4" in by_name and by_name[name + "_Q4"].op_type == "MatMulNBits":
            found[path] = "w4"
        elif name + "_quant" in by_name and by_name[name + "_quant"].op_type in (
            "ConvInteger",
            "MatMulInteger",
        ):
            found[path] = "w8"
        elif name in by_name and producers.get(by_name[name].input[1]) == "DequantizeLinear":
            found[path] = "int8"
        elif name in by_name and by_name[name].input[1] in inits:
            found[path] = "fp32"
        else:
            found[path] = "?"
    return found


INTEGER_OPS = {
    "int8": ("QLinearConv", "QLinearMatMul", "QGemm"),
    "w8": ("ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"),
    "w4": ("MatMulNBits",),
}


@pytest.mark.parametrize(("space", "seed"), WHOLE)
def test_onnxruntime_whole_model_mixed_plans(space: str, seed: int, tmp_path: Path) -> None:
    """Every planned layer of a whole model runs its kernel class (w4 convs as w8, the
    documented alias), after all passes ran on one graph and after ORT's fusions."""
    from latency_tables.backends.onnxruntime import (
        CONV_KERNEL_MAP,
        export_onnx,
        layer_nodes,
        to_onnx,
    )

    module, inputs, spec = _whole_model(space, seed)
    b = make("onnxruntime")
    plans = _plans(module, spec, b.kernel_map)
    float_model = export_onnx(module, inputs)
    float_ops = {n.name: n.op_type for n in float_model.graph.node}
    conv = {
        p
        for p, (name,) in layer_nodes(float_model, list(plans[0])).items()
        if float_ops[name] == "Conv"
    }
    for plan in plans:
        want = {p: CONV_KERNEL_MAP.get(k, k) if p in conv else k for p, k in plan.items()}
        model = to_onnx(module, inputs, plan)
        assert _onnx_layer_kernels(module, inputs, model, list(plan)) == want
        optimized = _optimized_ops(model, tmp_path)
        for k, ops in INTEGER_OPS.items():  # real integer kernels, one per planned layer
            assert sum(optimized.count(op) for op in ops) == list(want.values()).count(k), k
    assert b.measure(module, inputs, plans[0]).n == RUNS


@pytest.mark.slow  # LiteRT's converter alone takes ~15 s on the U-Net
@pytest.mark.parametrize(("space", "seed"), WHOLE)
def test_tflite_whole_model_mixed_plans(space: str, seed: int) -> None:
    """Every planned layer's op reads the activation / weight types of its kernel class
    (int4 → int8 where LiteRT has no int4 op, the documented alias)."""
    from latency_tables.backends.tflite import OP_KERNEL_MAP, layer_ops, operand_types, to_tflite

    module, inputs, spec = _whole_model(space, seed)
    b = make("tflite")
    types = {
        "fp32": ("FLOAT32", "FLOAT32"),
        "int8": ("INT8", "INT8"),
        "w8": ("FLOAT32", "INT8"),
        "w4a8": ("INT8", "INT4"),
        "w4": ("FLOAT32", "INT4"),
    }
    plans = _plans(module, spec, b.kernel_map)
    ops = layer_ops(to_tflite(module, inputs, "fp32"), module, inputs, list(plans[0]))
    for plan in plans:
        model = to_tflite(module, inputs, plan)
        got = operand_types(model, [op.weight for op in ops.values()])
        want = {
            p: {types[OP_KERNEL_MAP.get(ops[p].op_type, {}).get(k, k)]} for p, k in plan.items()
        }
        assert {p: got[ops[p].weight] for p in plan} == want
        # the interpreter agrees: planned weights are int8 (int4 shows as int8), fp32 float32
        dtypes = _weight_dtypes(module, inputs, model)
        assert dtypes == {p: "float32" if k == "fp32" else "int8" for p, k in plan.items()}
    assert {"DEPTHWISE_CONV_2D"} & {op.op_type for op in ops.values()}  # an aliased op
    assert b.measure(module, inputs, plans[0]).n == RUNS


# --------------------------------------------------------------------------- adb (phone)


def test_adb_measures_on_the_phone(phone: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    from latency_tables.adb import AdbClient

    calls: list[dict[str, Any]] = []
    real = AdbClient.benchmark

    def spy(self: AdbClient, graph: str, *args: Any, **kw: Any) -> Any:
        calls.append({"graph": graph, **kw})
        return real(self, graph, *args, **kw)

    monkeypatch.setattr(AdbClient, "benchmark", spy)
    with make("adb", phone, taskset="f0") as b:
        fp = b.fingerprint()
        assert (fp["model"], fp["soc"], fp["serial"]) == ("Pixel 8", "Tensor G3", phone.serial)
        assert fp["cpu_governors"].startswith("cpu0=sched_pixel,cpu1=sched_pixel")
        rt = b.runtime()
        digest = hashlib.sha256(phone.binary.read_bytes()).hexdigest()
        assert (
            rt["runtime"] == "tflite-benchmark_model" and rt["version"] == f"sha256:{digest[:16]}"
        )
        assert "benchmark_binary" not in b.settings() and b.settings()["taskset"] == "f0"

        module, inputs = block("conv")
        m = b.measure(module, inputs, "fp16")
        assert m.n == RUNS and m.mean_ms > 0 and m.std_ms >= 0
        assert calls[-1]["taskset_mask"] == "f0" and calls[-1]["num_runs"] == RUNS
        assert calls[-1]["extra_args"] == ["--xnnpack_force_fp16=true"]  # fp16 is real here
        with pytest.raises(ConversionError, match="mixing fp16 and fp32"):
            b.measure(module, inputs, {"conv1": "fp16"})
    remote = phone.state_dir / "fs" / phone.serial / "data/local/tmp/mqnas"
    assert sorted(p.name for p in remote.iterdir()) == ["benchmark_model"]  # block removed


# --------------------------------------------------------------------------- imports


def test_backends_import_no_toolchain() -> None:
    heavy = ("onnxruntime", "onnx", "litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    code = (
        "import sys, nas, latency_tables.backends; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
