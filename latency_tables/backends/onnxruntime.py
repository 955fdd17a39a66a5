"""`onnxruntime` backend: export to ONNX, quantize the planned layers, time `session.run`.

Export: `torch.onnx.export(..., dynamo=True)` (the default exporter). It
writes each node's module scopes into `metadata_props`
(`pkg.torch.onnx.name_scopes`, e.g. `['', 'ff', 'ff.0', 'linear_2']`: the
qualified names of the enclosing modules, then the FX node), so a conv/linear
module path maps to exactly its Conv / MatMul / Gemm node. Only when the dynamo
export fails do we fall back to the deprecated TorchScript exporter
(`dynamo=False`); its node names do not carry module paths reliably, so that
path supports uniform plans only (every constant-weight Conv/MatMul/Gemm
node gets the plan's class) and refuses mixed plans with a `ConversionError`.

Kernels (`kernel_map`):

- fp32: as exported.
- int8: static QDQ quantization (`quantize_static`, per-channel int8 weights,
  uint8 activations — ORT's recommended U8S8 pairing on CPU, with which its
  graph optimizer fuses every planned Conv/MatMul into QLinearConv /
  QLinearMatMul; with int8 activations some MatMuls stay DQ→MatMul in float),
  calibrated on a few inputs shaped like the example.
- w8: dynamic quantization (`quantize_dynamic`): MatMulInteger / ConvInteger
  with activations quantized at run time.
- w4: MatMulNBits (4-bit blockwise weights, block 32, float compute) for linear
  layers (a Gemm — a linear on 2-D input — is first rewritten as MatMul + Add;
  so is a w8 Gemm). Gemms of other classes stay Gemm: an int8 one becomes a QDQ
  Gemm (fused to QGemm), and quantize_dynamic is kept from splitting every Gemm
  of the graph, which in a mixed plan turned int8 Gemms into DQ → Transpose →
  float MatMul under new names.
  ORT has no 4-bit convolution: **conv layers of a w4 plan run w8**
  (ConvInteger) — recorded as `conv_kernel_map` and in `runtime()`.
- w4a8 → int8: no int4×int8 static kernels on the CPU provider.
- fp16 → fp32: the CPU provider lacks fp16 kernels for most ops (it would
  insert casts around float kernels, measuring the casts, not fp16).
A mixed plan runs the passes one after another on one graph (static int8, then
dynamic w8, then MatMulNBits), each restricted to its own nodes. After quantizing,
every planned node is checked to have become its integer op;
a layer left in float is a `ConversionError`, never a silent fp32 measurement.
Everything that is not a planned conv/linear layer (norms, activations,
attention matmuls) stays float; quantize/dequantize nodes sit at the layer
boundaries, as in a deployed mixed-precision model.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from latency_tables.backends.base import BACKENDS, Backend, Plan
from latency_tables.backends.common import (
    LRU,
    ConversionError,
    calibration_inputs,
    content_key,
    resolve_plan,
    time_runs,
)
from latency_tables.measurement import Measurement

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

KERNEL_MAP = {
    "fp32": "fp32",
    "fp16": "fp32",
    "int8": "int8",
    "w8": "w8",
    "w4a8": "int8",
    "w4": "w4",
}
CONV_KERNEL_MAP = {"w4": "w8"}  # per op type: no 4-bit conv kernel in onnxruntime
LAYER_OPS = ("Conv", "MatMul", "Gemm")
W4_BLOCK = 32
_FLOAT_MODELS = LRU(4)  # content key → serialized float ONNX model
_SCOPES = "pkg.torch.onnx.name_scopes"
_QUIET = ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer")


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/quantizer chatter: their INFO logs, the "consider pre-processing"
    warnings quantize_static logs straight on the root logger (a filter on the root
    logger sees only records made there, not ones propagated from named loggers),
    deprecation warnings and prints."""
    loggers = [logging.getLogger(n) for n in _QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addFilter(_below_error)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(_below_error)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    module: nn.Module, inputs: tuple[Tensor, ...], dynamo: bool = True
) -> onnx.ModelProto:
    """The float ONNX model of `module(*inputs)` (dynamo exporter unless `dynamo=False`),
    cached by content: a table build exports the same block once per kernel class."""
    import onnx

    key = content_key(module, inputs, dynamo)
    cached = _FLOAT_MODELS.get(key)
    if cached is not None:
        return onnx.load_from_string(cached)
    model = _export(module.eval(), inputs, dynamo)
    _FLOAT_MODELS.put(key, model.SerializeToString())
    return model


def _export(module: nn.Module, inputs: tuple[Tensor, ...], dynamo: bool) -> onnx.ModelProto:
    import onnx
    import torch

    with _quiet():
        if dynamo:
            program = torch.onnx.export(module, inputs, dynamo=True, verbose=False)
            if program is None:  # the dynamo exporter always returns an ONNXProgram
                raise ConversionError("torch.onnx.export(dynamo=True) returned no program")
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(module, inputs, buf, dynamo=False)
        return onnx.load_from_string(buf.getvalue())


def layer_nodes(model: onnx.ModelProto, layers: Sequence[str]) -> dict[str, list[str]]:
    """Module path → names of its Conv/MatMul/Gemm nodes, from the dynamo exporter's scopes."""
    wanted = set(layers)
    found: dict[str, list[str]] = {p: [] for p in layers}
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        if _SCOPES not in meta:
            continue
        # module scopes outermost first; the last entry is the FX node's own name
        # (e.g. "linear_1"), which may collide with a module path, so it is skipped.
        scopes = ast.literal_eval(meta[_SCOPES])[:-1]
        owner = next((s for s in reversed(scopes) if s in wanted), None)
        if owner is not None:
            found[owner].append(node.name)
    return found


def _weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm nodes whose second input is a stored weight (TorchScript fallback)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS and n.input[1] in inits]


class _Reader:
    """onnxruntime `CalibrationDataReader` over a fixed list of feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not needed by MinMax; present for the protocol
        pass


def feed(names: Sequence[str], inputs: Sequence[Tensor]) -> dict[str, Any]:
    """numpy feed of `inputs` for graph inputs `names` (the exporter keeps their order)."""
    if len(names) != len(inputs):
        raise ConversionError(
            f"the ONNX graph has {len(names)} inputs {list(names)} but {len(inputs)} were given; "
            "inputs the module ignores or folds to constants are dropped by the exporter"
        )
    return {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}


def _feeds(model: onnx.ModelProto, batches: Sequence[Sequence[Tensor]]) -> list[dict[str, Any]]:
    names = [i.name for i in model.graph.input]
    return [feed(names, batch) for batch in batches]


def to_onnx(
    module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan, exporter: str = "dynamo"
) -> onnx.ModelProto:
    """The ONNX model onnxruntime runs for `plan` (after this backend's aliases).

    Raises `ConversionError` naming the step that failed.
    """
    import onnx

    kernels = resolve_plan(module, plan, KERNEL_MAP)
    model, mapped = None, True
    if exporter == "dynamo":
        try:
            model = export_onnx(module, inputs, dynamo=True)
        except Exception as e:  # noqa: BLE001  (any exporter failure → try the old exporter)
            log.warning("dynamo ONNX export failed (%s); falling back to dynamo=False", e)
    elif exporter != "torchscript":
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    if model is None:
        mapped = False
        try:
            model = export_onnx(module, inputs, dynamo=False)
        except Exception as e:
            raise ConversionError(
                f"ONNX export of {type(module).__name__} failed with both exporters: {e}"
            ) from e

    by_class: dict[str, list[str]] = {}
    if mapped:
        nodes = layer_nodes(model, list(kernels))
        missing = sorted(p for p, ns in nodes.items() if not ns and kernels[p] != "fp32")
        if missing:
            raise ConversionError(
                f"no ONNX Conv/MatMul/Gemm node carries the module scope of {missing} "
                f"(exporter scopes: {_SCOPES}); these layers cannot be quantized per layer"
            )
        for path, k in kernels.items():
            by_class.setdefault(k, []).extend(nodes[path])
    else:
        classes = set(kernels.values())
        if len(classes) > 1:
            raise ConversionError(
                "the TorchScript ONNX exporter does not record module paths, so only uniform "
                f"plans can be quantized; this plan mixes {sorted(classes)}"
            )
        if classes:
            by_class[classes.pop()] = _weight_nodes(model)
    if not any(by_class.get(k) for k in ("int8", "w8", "w4")):
        return model

    with tempfile.TemporaryDirectory(prefix="mqnas-onnx-") as tmp, _quiet():
        # The quantizers take paths (and mutate a ModelProto they are given).
        current = Path(tmp, "float.onnx")
        # The exporter's value_info trips quantize_dynamic on Gemm(transB=1) ("inferred
        # shape and existing shape differ"); the quantizers infer shapes themselves.
        stripped = onnx.ModelProto()
        stripped.CopyFrom(model)
        stripped.graph.ClearField("value_info")
        _gemm_to_matmul(stripped, by_class.get("w8", []) + by_class.get("w4", []))
        onnx.save(stripped, current)
        try:
            current, expected = _quantize(current, stripped, by_class, inputs, Path(tmp))
        except Exception as e:
            raise ConversionError(
                f"onnxruntime quantization of {type(module).__name__} failed: {e}"
            ) from e
        out = onnx.load(current)
    _check_quantized(out, expected)
    return out


def _gemm_to_matmul(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Rewrite the plain Gemm nodes among `names` (a linear on 2-D input) as MatMul + Add,
    in place, the MatMul keeping the Gemm's name: quantize_dynamic would split a Gemm
    into a *float* MatMul under a new name, and MatMulNBits only replaces MatMul."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    wanted, nodes, replaced = set(names), [], set()
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if (
            node.op_type != "Gemm"
            or node.name not in wanted
            or not plain
            or attrs.get("transA", 0)
            or node.input[1] not in inits
        ):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            data = numpy_helper.to_array(inits[weight]).T.copy()
            replaced.add(weight)
            weight = f"{weight}_t"
            model.graph.initializer.append(numpy_helper.from_array(data, weight))
        bias = node.input[2] if len(node.input) > 2 else ""
        out = f"{node.output[0]}_mm" if bias else node.output[0]
        nodes.append(
            onnx.helper.make_node("MatMul", [node.input[0], weight], [out], name=node.name)
        )
        if bias:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [out, bias], [node.output[0]], name=f"{node.name}_bias"
                )
            )
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    unused = replaced - {i for n in nodes for i in n.input}  # drop the untransposed copies
    kept = [i for i in model.graph.initializer if i.name not in unused]
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(kept)


@contextlib.contextmanager
def _keep_gemms() -> Iterator[None]:
    """Stop quantize_dynamic from rewriting *every* plain Gemm of the graph as
    (Transpose +) MatMul + Add under new names: that undoes the int8 pass's QDQ Gemms
    (DQ → Transpose → MatMul, which onnxruntime no longer fuses into an integer kernel)
    and renames fp32 ones. The Gemms it is asked to quantize were already rewritten by
    `_gemm_to_matmul`, so nothing is lost."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    original = ONNXModel.replace_gemm_with_matmul
    ONNXModel.replace_gemm_with_matmul = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        ONNXModel.replace_gemm_with_matmul = original  # type: ignore[method-assign]


def _check_quantized(model: onnx.ModelProto, expected: dict[str, tuple[str, ...]]) -> None:
    """Each planned node must have become what its class promises: node name → op types
    that may carry it (QDQ keeps the name and reads its weight via DequantizeLinear;
    quantize_dynamic adds "_quant", MatMulNBitsQuantizer "_Q4")."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    ops = {n.name: n for n in model.graph.node}
    missed = []
    for name, kinds in expected.items():
        if kinds == ("QDQ",):
            node = ops.get(name)
            ok = node is not None and producers.get(node.input[1]) == "DequantizeLinear"
        else:
            ok = any(
                ops.get(name + suffix) is not None and ops[name + suffix].op_type in kinds
                for suffix in ("_quant", "_Q4")
            )
        if not ok:
            missed.append(name)
    if missed:
        raise ConversionError(
            f"onnxruntime's quantizers left nodes {missed} in float; these layers would be "
            "measured as fp32"
        )


def _quantize(
    path: Path,
    model: onnx.ModelProto,
    by_class: dict[str, list[str]],
    inputs: tuple[Tensor, ...],
    tmp: Path,
) -> tuple[Path, dict[str, tuple[str, ...]]]:
    """Static int8 → dynamic w8 → MatMulNBits w4, each on its own nodes. Returns the last
    file and, per planned node, the op types that must carry it (for `_check_quantized`)."""
    import onnx
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    ops = {n.name: n.op_type for n in model.graph.node}
    w4 = [n for n in by_class.get("w4", []) if ops[n] == "MatMul"]
    w8 = by_class.get("w8", []) + [n for n in by_class.get("w4", []) if ops[n] != "MatMul"]
    if len(w8) > len(by_class.get("w8", [])):
        log.info("%s run w4 as w8: no 4-bit kernel for their op", w8[len(by_class.get("w8", [])) :])
    expected: dict[str, tuple[str, ...]] = {n: ("QDQ",) for n in by_class.get("int8", [])}
    expected |= {n: ("MatMulInteger", "ConvInteger") for n in w8}
    expected |= {n: ("MatMulNBits",) for n in w4}
    if by_class.get("int8"):
        out = tmp / "int8.onnx"
        quantize_static(
            path,
            out,
            _Reader(_feeds(model, calibration_inputs(inputs))),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(LAYER_OPS),
            nodes_to_quantize=by_class["int8"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        path = out
    if w8:
        out = tmp / "w8.onnx"
        with _keep_gemms():
            quantize_dynamic(
                path,
                out,
                op_types_to_quantize=list(LAYER_OPS),
                nodes_to_quantize=w8,
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
        path = out
    if w4:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        current = onnx.load(path)
        # nodes_to_include only adds to the op-type selection; exclusion is what restricts.
        keep = [n.name for n in current.graph.node if n.name not in set(w4)]
        quantizer = MatMulNBitsQuantizer(
            current, bits=4, block_size=W4_BLOCK, is_symmetric=True, nodes_to_exclude=keep
        )
        quantizer.process()
        out = tmp / "w4.onnx"
        onnx.save(quantizer.model.model, out)
        path = out
    return path, expected


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """onnxruntime `InferenceSession` (CPUExecutionProvider unless `providers=[...]`)."""

    name = "onnxruntime"
    kernel_map = KERNEL_MAP
    conv_kernel_map = CONV_KERNEL_MAP

    def __init__(self, threads: int = 1, warmup: int = 10, runs: int = 50, **options: Any) -> None:
        options.setdefault("providers", ["CPUExecutionProvider"])
        options.setdefault("exporter", "dynamo")
        super().__init__(threads, warmup, runs, **options)

    def runtime(self) -> dict[str, str]:
        import onnxruntime as ort

        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "providers": ",".join(self.options["providers"]),
            "conv_kernel_map": ",".join(f"{k}->{v}" for k, v in CONV_KERNEL_MAP.items()),
        }

    def session(self, model: onnx.ModelProto) -> Any:
        """An `InferenceSession` with this backend's threads and optimizations."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(
                model.SerializeToString(), so, providers=list(self.options["providers"])
            )
        except Exception as e:
            raise ConversionError(f"onnxruntime could not load the model: {e}") from e

    def prepare(
        self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan
    ) -> Callable[[], Measurement]:
        model = to_onnx(module, inputs, plan, exporter=self.options["exporter"])
        sess = self.session(model)
        data = feed([i.name for i in sess.get_inputs()], inputs)
        return lambda: time_runs(lambda: sess.run(None, data), self.warmup, self.runs)

    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        return self.prepare(module, inputs, plan)()
