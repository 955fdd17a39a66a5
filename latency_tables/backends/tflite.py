"""`tflite` backend: LiteRT on this machine — convert, quantize, time `Interpreter.invoke()`.

`to_tflite(module, inputs, plan)` is the conversion the phone backend
(`adb_phone`) pushes too: `litert_torch.convert` gives the float model, then
`ai_edge_quantizer` quantizes exactly the planned conv/linear layers, one
recipe entry per layer. The quantizer selects ops by a regex on their output
tensor names, and LiteRT's names are no reliable map back to modules (module
stacks skip containers such as ModuleList, and fused ops carry several
stacks, e.g. to_q/to_k of an attention). So layers are found by their
weights instead: one forward run records the weight each layer hands to
F.linear/F.conv2d, and each is matched to the FULLY_CONNECTED / CONV_2D /
DEPTHWISE_CONV_2D / BATCH_MATMUL op whose constant weight has the same shape
(up to layout) and the same scale-invariant statistics (the converter may
fold the attention scale into to_q). The recipe then names that op's exact
output tensors. After quantizing, each planned layer's op must read the
activation and weight types of its kernel class (`LAYER_TYPES`: e.g. int8
activations and int4 weights for w4a8), so a mismatch fails loudly instead of
timing float or another class. The module runs once eagerly before conversion,
so constants it computes and caches on its first call (MobileDiT's float64
position table) are not traced into the graph (LiteRT has no float64 ops).

Kernels (ai_edge_quantizer recipe per class):

- fp32: the converted model.
- int8: static int8 weights + int8 activations (`add_static_config(8, 8)`,
  calibrated on a few inputs shaped like the example).
- w8: dynamic range (`add_dynamic_config(8)`: int8 channelwise weights,
  activations quantized on the fly — XNNPACK's qd8 kernels). We pick dynamic
  over weight-only because weight-only is dequantized to fp32 at load time and
  would time exactly like fp32.
- w4: dynamic range with int4 channelwise weights (`add_dynamic_config(4)`).
- w4a8: static int8 activations with int4 weights (`add_static_config(8, 4)`).
  The quantizer has int4 only for FULLY_CONNECTED and CONV_2D: a layer the
  converter lowers to DEPTHWISE_CONV_2D (e.g. a conv with one input channel),
  BATCH_MATMUL or CONV_2D_TRANSPOSE runs w4 as w8 and w4a8 as int8
  (`OP_KERNEL_MAP`, recorded in `runtime()`).
- fp16: `to_tflite` stores fp16 weights (FLOAT_CASTING recipe), but XNNPACK
  on this host dequantizes them to fp32 at load and computes in fp32, so
  **this backend aliases fp16 → fp32**. The phone backend runs fp16 for
  real (`--xnnpack_force_fp16`).
Ops outside the planned layers (norms, activations, attention matmuls) stay
float, with quantize/dequantize at the layer boundaries.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
from torch import Tensor, nn

from latency_tables.backends.base import BACKENDS, KERNELS, Backend, Plan
from latency_tables.backends.common import (
    LRU,
    ConversionError,
    calibration_inputs,
    content_key,
    resolve_plan,
    time_runs,
)
from latency_tables.measurement import Measurement

log = logging.getLogger(__name__)

KERNEL_MAP = {
    "fp32": "fp32",
    "fp16": "fp32",
    "int8": "int8",
    "w8": "w8",
    "w4a8": "w4a8",
    "w4": "w4",
}
_IDENTITY = {k: k for k in KERNELS}
_FLOAT_MODELS = LRU(4)
# (activation, weight) flatbuffer types of the op that runs a layer of each kernel class
# ("*": any; fp16 weights are read by a DEQUANTIZE op, which has no activation operand).
LAYER_TYPES = {
    "int8": ("INT8", "INT8"),
    "w4a8": ("INT8", "INT4"),
    "w8": ("FLOAT32", "INT8"),
    "w4": ("FLOAT32", "INT4"),
    "fp16": ("*", "FLOAT16"),
}


# ai_edge_quantizer quantizes int4 weights only on FULLY_CONNECTED and CONV_2D (its
# default_policy); other weighted ops run the nearest int8 kernel instead.
OP_KERNEL_MAP = {
    op: {"w4": "w8", "w4a8": "int8"}
    for op in ("DEPTHWISE_CONV_2D", "BATCH_MATMUL", "CONV_2D_TRANSPOSE")
}
_WEIGHTED_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D_TRANSPOSE",
    "BATCH_MATMUL",
)
_CALLS = ("linear", "conv1d", "conv2d", "conv_transpose2d")


def effective_weights(
    module: nn.Module, inputs: tuple[Tensor, ...], paths: Sequence[str]
) -> dict[str, np.ndarray]:
    """Layer path → the weight it passes to its kernel in one forward run (after any
    slicing or fake quantization its forward applies)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    calls = {getattr(F, c) for c in _CALLS}
    stack: list[str] = []
    seen: dict[str, np.ndarray] = {}

    class Record(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in calls and stack and stack[-1] not in seen:
                w = args[1] if len(args) > 1 else kwargs["weight"]
                seen[stack[-1]] = w.detach().float().cpu().numpy().copy()
            return func(*args, **kwargs)

    def enter(path: str) -> Callable[..., None]:
        return lambda *_: stack.append(path)

    def leave(*_: Any) -> None:  # a forward hook returning a value would replace the output
        stack.pop()

    handles = []
    for path in paths:
        layer = module.get_submodule(path)
        handles += [
            layer.register_forward_pre_hook(enter(path)),
            layer.register_forward_hook(leave),
        ]
    try:
        with torch.no_grad(), Record():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _signature(w: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape up to layout (sorted, 1s dropped) and scale-invariant statistics of a weight."""
    shape = tuple(sorted(d for d in w.shape if d != 1))
    v = np.asarray(w, dtype=np.float64).ravel()
    norm = float(np.sqrt((v * v).sum()))
    if norm == 0.0:
        return shape, np.zeros(3)
    u = v / norm
    return shape, np.array([u.sum(), (u**3).sum(), np.abs(u).max()])


@dataclass(frozen=True)
class LayerOp:
    """The LiteRT op that runs one conv/linear layer."""

    op_type: str
    scope: str  # the op's output tensor names as ai_edge_quantizer sees them ("a;b;")
    weight: str  # name of its constant weight tensor


def layer_ops(
    model: bytes, module: nn.Module, inputs: tuple[Tensor, ...], paths: Sequence[str]
) -> dict[str, LayerOp]:
    """Layer path → the op of the float `model` that runs it (matched by weights).

    Raises `ConversionError` for a layer no op's weight matches.
    """
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    flat = fb.read_model(model)
    graph = flat.subgraphs[0]
    candidates: list[tuple[tuple[tuple[int, ...], np.ndarray], LayerOp]] = []
    scopes: list[str] = []
    for op in graph.operators:
        scope = fb.get_op_scope(op, graph.tensors)
        scopes.append(scope)
        op_type = fb.TFL_OP_CODE_TO_NAME.get(flat.operatorCodes[op.opcodeIndex].builtinCode, "")
        if op_type not in _WEIGHTED_OPS:
            continue
        for i in (1, 0):  # the constant operand (input 0 only for a BATCH_MATMUL)
            if i >= len(op.inputs) or op.inputs[i] < 0:
                continue
            tensor = graph.tensors[op.inputs[i]]
            data = fb.get_tensor_data(tensor, flat.buffers)
            if data is not None and data.size > 0 and data.dtype.kind == "f":
                candidates.append(
                    (_signature(data), LayerOp(op_type, scope, fb.get_tensor_name(tensor)))
                )
                break
    weights = effective_weights(module, inputs, paths)
    found: dict[str, LayerOp] = {}
    for path in paths:
        if path not in weights:
            raise ConversionError(f"layer {path!r} called no F.linear/F.conv* in a forward run")
        shape, stats = _signature(weights[path])
        scored = [
            (float(np.abs(st - stats).max()), i)
            for i, ((sh, st), _) in enumerate(candidates)
            if sh == shape
        ]
        if not scored or min(scored)[0] > 1e-2:
            raise ConversionError(
                f"no LiteRT op carries the weight of layer {path!r} (shape {shape}); the "
                "converter may have merged or rewritten it, so it cannot be quantized per layer"
            )
        _, best = min(scored)
        found[path] = candidates.pop(best)[1]
        if scopes.count(found[path].scope) > 1:
            raise ConversionError(
                f"the op of layer {path!r} shares its output names with another op"
            )
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress lines from litert_torch (unless LITERT_TORCH_SHOW_PROGRESS is set), no
    pytree deprecation warnings from torch inside the converter."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    had = key in os.environ
    os.environ.setdefault(key, "n")
    try:
        # ai_edge_quantizer's calibration / transformation progress bars (tqdm binds
        # sys.stderr when a bar is created; logging handlers keep their own stream).
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # The quantizer's calibration interpreter keeps all tensors, and says so.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            yield
    finally:
        if not had:
            os.environ.pop(key, None)


def convert_float(module: nn.Module, inputs: tuple[Tensor, ...]) -> bytes:
    """`litert_torch.convert(module.eval(), inputs)` as flatbuffer bytes (cached by content:
    a table build converts the same block once per kernel class)."""
    key = content_key(module, inputs)
    cached = _FLOAT_MODELS.get(key)
    if cached is not None:
        return cached
    import litert_torch
    import torch

    module.eval()
    with torch.no_grad():
        # One eager call first: a module that computes constants on its first call and
        # caches them (MobileDiT's float64 sin-cos position table) would otherwise have
        # that computation traced into the graph, and LiteRT has no float64 ops.
        module(*inputs)
    try:
        with _quiet():
            model = bytes(litert_torch.convert(module, inputs).model_content())
    except Exception as e:
        raise ConversionError(
            f"litert_torch could not convert {type(module).__name__}: {type(e).__name__}: {e}"
        ) from e
    _FLOAT_MODELS.put(key, model)
    return model


def _recipe(ops: Mapping[str, LayerOp], kernels: Mapping[str, str]) -> list[dict[str, Any]]:
    """One ai_edge_quantizer recipe entry per planned layer, selecting exactly its op."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rm = recipe_manager.RecipeManager()
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    for path, planned in kernels.items():
        op = ops[path].op_type
        k = op_kernel(op, planned)
        if k != planned:
            log.info("%s runs as %s: %s has no %s kernel", path, k, op, planned)
        rx = "^" + re.escape(ops[path].scope) + "$"
        if k == "int8":
            rm.add_static_config(rx, every, activation_num_bits=8, weight_num_bits=8)
        elif k == "w4a8":
            rm.add_static_config(rx, every, activation_num_bits=8, weight_num_bits=4)
        elif k in ("w8", "w4"):
            rm.add_dynamic_config(rx, every, num_bits=8 if k == "w8" else 4)
        elif k == "fp16":
            rm.add_weight_only_config(rx, every, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return rm.get_quantization_recipe()


def signature_inputs(interpreter: Any) -> list[dict[str, Any]]:
    """Input details of the model's signature, in the order of the module's arguments."""
    key = next(iter(interpreter.get_signature_list()))
    details = interpreter.get_signature_runner(key).get_input_details()

    def order(item: tuple[str, Any]) -> int:
        m = re.fullmatch(r"args_(\d+)", item[0])
        return int(m.group(1)) if m else 1 << 30

    return [{**d, "arg": n} for n, d in sorted(details.items(), key=order)]


def _check_arity(sig: list[dict[str, Any]], inputs: Sequence[Tensor]) -> list[dict[str, Any]]:
    if len(sig) != len(inputs):
        raise ConversionError(
            f"the converted model takes {len(sig)} inputs ({[d['arg'] for d in sig]}) but "
            f"{len(inputs)} were given; inputs the module ignores are dropped by the converter"
        )
    return sig


def _as_numpy(detail: Mapping[str, Any], t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(detail["dtype"]).reshape(detail["shape"])


def _quantize(
    model: bytes, ops: Mapping[str, LayerOp], inputs: tuple[Tensor, ...], kernels: Mapping[str, str]
) -> bytes:
    """Quantize `kernels`' layers (found at `ops`), calibrating when a recipe is static."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer

    qt = quantizer.Quantizer(model, _recipe(ops, kernels))
    calibration = None
    if qt.need_calibration:
        interp = Interpreter(model_content=model)
        key = next(iter(interp.get_signature_list()))
        sig = _check_arity(signature_inputs(interp), inputs)
        data = [
            {d["arg"]: _as_numpy(d, t) for d, t in zip(sig, batch)}
            for batch in calibration_inputs(inputs)
        ]
        calibration = qt.calibrate({key: data})
    result = qt.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise ConversionError("ai_edge_quantizer returned no model")
    return bytes(result.quantized_model)


def operand_types(model: bytes, weights: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
    """Weight tensor name → {(activation type, weight type)} of the ops reading it, as
    flatbuffer type names ("INT4" shows as int8 in the interpreter). The activation is the
    op's other operand of its first two ("" for a one-input op such as DEQUANTIZE)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    graph = fb.read_model(model).subgraphs[0]
    wanted = set(weights)
    found: dict[str, set[tuple[str, str]]] = {w: set() for w in wanted}

    def type_of(i: int) -> str:
        return fb.TENSOR_CODE_TO_TYPE[graph.tensors[i].type] if i >= 0 else ""

    for op in graph.operators:
        first = [int(i) for i in op.inputs[:2]]
        for j, i in enumerate(first):
            name = fb.get_tensor_name(graph.tensors[i]) if i >= 0 else ""
            if name in wanted:
                other = first[1 - j] if len(first) == 2 else -1
                found[name].add((type_of(other), type_of(i)))
    return found


def op_kernel(op_type: str, kernel: str) -> str:
    """The kernel class a layer lowered to `op_type` really runs (see `OP_KERNEL_MAP`)."""
    return OP_KERNEL_MAP.get(op_type, {}).get(kernel, kernel)


def _check_quantized(model: bytes, ops: Mapping[str, LayerOp], kernels: Mapping[str, str]) -> None:
    """Every planned layer's op must read the activation and weight types of the kernel
    class it runs: a layer left float, or quantized weight-only where activations were
    planned int8, fails here rather than being timed as something else."""
    found = operand_types(model, [ops[p].weight for p in kernels])
    wrong: dict[str, str] = {}
    for path, k in kernels.items():
        want = LAYER_TYPES[op_kernel(ops[path].op_type, k)]
        got = found[ops[path].weight]
        if not got or any(want[0] not in ("*", a) or want[1] != w for a, w in got):
            wrong[path] = f"{k}: read {sorted(got) or 'nothing'}, want {want}"
    if wrong:
        raise ConversionError(
            f"ai_edge_quantizer did not quantize these layers as planned: {wrong}; the "
            "recipe did not select their ops as intended"
        )


def to_tflite(module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> bytes:
    """The `.tflite` flatbuffer of `module(*inputs)` with `plan`'s layers quantized.

    Every kernel class is converted as named (no aliasing here: fp16 gives fp16
    weights). Raises `ConversionError` when conversion or quantization fails.
    """
    kernels = resolve_plan(module, plan, _IDENTITY)
    model = convert_float(module, inputs)
    quantized = {p: k for p, k in kernels.items() if k != "fp32"}
    if not quantized:
        return model
    ops = layer_ops(model, module, inputs, list(quantized))
    try:
        with _quiet():
            model = _quantize(model, ops, inputs, quantized)
    except ConversionError:
        raise
    except Exception as e:
        classes = sorted(set(quantized.values()))
        raise ConversionError(
            f"ai_edge_quantizer failed on {type(module).__name__} for {classes}: "
            f"{type(e).__name__}: {e}"
        ) from e
    _check_quantized(model, ops, quantized)
    return model


def litert_versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "converter": f"litert-torch {version('litert-torch')}",
        "quantizer": f"ai-edge-quantizer {version('ai-edge-quantizer')}",
        "op_kernel_map": "; ".join(
            f"{op}: " + ",".join(f"{k}->{v}" for k, v in m.items())
            for op, m in OP_KERNEL_MAP.items()
        ),
    }


@BACKENDS.register("tflite")
class TFLiteBackend(Backend):
    """ai-edge-litert `Interpreter` on this machine (XNNPACK, `num_threads=threads`)."""

    name = "tflite"
    kernel_map = KERNEL_MAP

    def runtime(self) -> dict[str, str]:
        return {
            "runtime": "ai-edge-litert",
            "version": metadata.version("ai-edge-litert"),
            "delegate": "XNNPACK (default)",
            **litert_versions(),
        }

    def prepare(
        self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan
    ) -> Callable[[], Measurement]:
        from ai_edge_litert.interpreter import Interpreter

        kernels = resolve_plan(module, plan, self.kernel_map)
        model = to_tflite(module, inputs, kernels)
        try:
            interp = Interpreter(model_content=model, num_threads=self.threads)
            interp.allocate_tensors()
        except Exception as e:
            raise ConversionError(f"the LiteRT interpreter could not load the model: {e}") from e
        for d, t in zip(_check_arity(signature_inputs(interp), inputs), inputs):
            interp.set_tensor(d["index"], _as_numpy(d, t))
        return lambda: time_runs(interp.invoke, self.warmup, self.runs)

    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        return self.prepare(module, inputs, plan)()
