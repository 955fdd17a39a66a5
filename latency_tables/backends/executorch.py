"""`executorch` backend: ExecuTorch with the XNNPACK delegate on this machine.

The on-device runtime PyTorch users ship. A block is exported with
`torch.export`, quantized where the plan asks (PT2E with `XNNPACKQuantizer`,
one quantizer per kernel class, each restricted to its planned layers by their
module path), lowered with `to_edge_transform_and_lower` (dynamically quantized
layers first, one delegate each, then `XnnpackPartitioner` for the rest, as
ExecuTorch's own recipes do) to an ExecuTorch program and timed through
`executorch.runtime` (`Method.execute`) over warm-up plus timed runs.

Kernels (XNNPACK's names in brackets):

- fp32 [f32].
- fp16 [f16]: the block in half precision when every layer is fp16 (norms and
  activations too, as an fp16 deployment runs it); otherwise each fp16 layer
  is fed and read through casts. XNNPACK computes it with its f16 kernels (on
  x86 with F16C they keep f16 storage and widen to f32 for arithmetic; ARM
  phones compute in f16). Ops XNNPACK has no f16 kernel for (GroupNorm, GELU)
  run on ExecuTorch's portable kernels, as they would on a device.
- int8 [qs8 × qc8w]: static per-tensor int8 activations (calibrated on a few
  inputs shaped like the example), per-channel symmetric int8 weights.
- w8 [qd8 × qc8w]: dynamic quantization: activations quantized per call.
- w4 [qd8 × qc4w]: dynamic activations, per-channel int4 weights.
- w4a8 [qs8 × qc4w]: static int8 activations, per-channel int4 weights.

Convolutions (`CONV_KERNEL_MAP`) run every integer class as int8: the XNNPACK
serializer packs 4-bit weights of 2-D (linear) tensors only, and a dynamically
quantized convolution inside a model corrupts its output shape in executorch
1.5.1 (an error or a segfault, depending on the shapes), so the only integer
convolution that runs reliably is the static one. The alias is recorded in
`runtime()["conv_kernel_map"]`, as onnxruntime records its own.

After lowering, every planned layer must sit inside an XNNPACK delegate with
the weight bits and activation kind of the class it runs; a layer left to the
portable kernels or quantized otherwise is a `ConversionError`, never timed
as something else. Ops outside the planned layers (norms, attention matmuls)
stay float, with quantize/dequantize at the layer boundaries. A whole model that
mixes many classes per layer can leave the partitioner without a cycle-free
partition (layers of different classes sharing an input): a `ConversionError`
that says so.

The thread pool is ExecuTorch's process-wide one (`_unsafe_reset_threadpool`);
loaded programs keep a pointer to it, so it is resized only while no program
this module loaded is alive.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
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
from latency_tables.backends.torch_eager import _Half, _set_submodule
from latency_tables.measurement import Measurement
from nas.errors import UserError

if TYPE_CHECKING:
    from torch.fx import Node

log = logging.getLogger(__name__)

KERNEL_MAP = {k: k for k in KERNELS}  # every class has an XNNPACK kernel for linears
CONV_KERNEL_MAP = {"w8": "int8", "w4": "int8", "w4a8": "int8"}  # see the module docstring
# kernel class → keyword arguments of XNNPACK's `get_symmetric_quantization_config`
QUANT_CONFIGS: dict[str, dict[str, Any]] = {
    "int8": {"is_per_channel": True, "is_dynamic": False},
    "w8": {"is_per_channel": True, "is_dynamic": True},
    "w4": {"is_per_channel": True, "is_dynamic": True, "weight_qmin": -8, "weight_qmax": 7},
    "w4a8": {"is_per_channel": True, "is_dynamic": False, "weight_qmin": -8, "weight_qmax": 7},
}
# (weight bits, dynamic activations) of a lowered layer → the kernel class it runs
_QUANTIZED_CLASS = {(8, False): "int8", (8, True): "w8", (4, True): "w4", (4, False): "w4a8"}
_LAYER_OPS = ("convolution", "linear", "addmm", "mm")
INSTALL = "pip install executorch==1.5.1 (or the whole lock: pip install -r requirements.lock)"
_PROGRAMS = LRU(4)  # content key → `Lowered`
# Methods loaded by this module that hold the process-wide thread pool.
_LOADED: weakref.WeakSet[Any] = weakref.WeakSet()


class ExecuTorchMissing(UserError, ImportError):
    """ExecuTorch is not installed in this environment."""


def require_executorch() -> None:
    """Raise `ExecuTorchMissing` naming the install command unless executorch is importable.

    Cheap (no import): the toolchain itself is imported only when a block is converted.
    """
    if importlib.util.find_spec("executorch") is None:
        raise ExecuTorchMissing(
            f"the executorch latency backend needs ExecuTorch, which is not installed: {INSTALL}"
        )


def version() -> str:
    """The installed ExecuTorch release, e.g. "1.5.1+cpu"."""
    require_executorch()
    from executorch.version import __version__

    return __version__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No deprecation/future warnings from export and lowering (torch's pytree LeafSpec
    notices, one per delegate), no INFO chatter of the partitioner."""
    noisy = [logging.getLogger(n) for n in ("executorch", "torchao")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


def layer_kernels(module: nn.Module, plan: Plan) -> dict[str, str]:
    """Module path → kernel class XNNPACK runs for it (`CONV_KERNEL_MAP` for convs), for
    every conv/linear of `module`."""
    return {
        p: CONV_KERNEL_MAP.get(k, k) if isinstance(module.get_submodule(p), nn.Conv2d) else k
        for p, k in resolve_plan(module, plan, KERNEL_MAP).items()
    }


def _owner(node: Node, paths: Mapping[str, str] | set[str]) -> str | None:
    """The innermost module of `paths` whose code produced `node` (None if none)."""
    for path, _ in reversed(list(node.meta.get("nn_module_stack", {}).values())):
        if path in paths:
            return path
    return None


def all_half(kernels: Mapping[str, str]) -> bool:
    """True when every layer is fp16: the whole block (inputs too) then runs in float16."""
    return bool(kernels) and all(k == "fp16" for k in kernels.values())


def model_inputs(inputs: tuple[Tensor, ...], kernels: Mapping[str, str]) -> tuple[Tensor, ...]:
    """The inputs the program of `kernels` takes (float16 for an all-fp16 block)."""
    half = all_half(kernels)
    return tuple(
        t.detach().cpu().half() if half and t.is_floating_point() else t.detach().cpu()
        for t in inputs
    )


def _float_module(module: nn.Module, kernels: Mapping[str, str]) -> nn.Module:
    """A copy of `module` in eval mode with its fp16 layers in float16 (the whole block
    when every layer is fp16; otherwise each is fed and read through casts)."""
    module = copy.deepcopy(module).eval()
    if all_half(kernels):
        return module.half()
    for path in (p for p, k in kernels.items() if k == "fp16"):
        _set_submodule(module, path, _Half(module.get_submodule(path)))
    return module


def _quantize(
    program: torch.export.ExportedProgram,
    inputs: tuple[Tensor, ...],
    by_class: Mapping[str, set[str]],
) -> torch.export.ExportedProgram:
    """PT2E: one XNNPACKQuantizer per kernel class, each annotating only the nodes its
    layers produced, calibrated on inputs shaped like the example, then re-exported."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    def only(paths: set[str]) -> Callable[[Node], bool]:
        # Weights and biases are get_attr nodes without a module stack: let them through,
        # the op that reads them decides.
        return lambda n: n.op != "call_function" or _owner(n, paths) is not None

    quantizers = []
    for k, paths in sorted(by_class.items()):
        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**QUANT_CONFIGS[k]))
        quantizers.append(q.set_filter_function(only(paths)))
    graph = prepare_pt2e(program.module(), ComposableQuantizer(quantizers))
    for batch in calibration_inputs(inputs):
        graph(*batch)
    return torch.export.export(convert_pt2e(graph), inputs)


def _op_name(node: Node) -> str:
    """The operator of `node`: linear for `aten.linear.default` ("" for no operator)."""
    parts = getattr(node.target, "__name__", "").split(".")
    return parts[-2] if len(parts) > 1 else ""


def _lowered_kernel(node: Node) -> str:
    """The kernel class of a conv/linear node inside an XNNPACK delegate, read from the
    quantize/dequantize nodes around it."""
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant

    weight, act = node.args[1], node.args[0]
    if _op_name(node) == "addmm":  # addmm(bias, input, weightᵀ)
        act, weight = node.args[1], node.args[2]
    if not is_dequant(weight):
        val = node.meta.get("val")
        return "fp16" if val is not None and val.dtype == torch.float16 else "fp32"
    qmin, qmax = weight.args[4], weight.args[5]
    bits = 4 if (qmin, qmax) == (-8, 7) else 8
    if not is_dequant(act):
        return f"w{bits}-weight-only"
    # A dynamic activation's scale is computed by choose_qparams (a node); a static one
    # is a constant found at calibration.
    dynamic = isinstance(act.args[1], torch.fx.Node)
    return _QUANTIZED_CLASS[(bits, dynamic)]


def delegated_kernels(edge: Any, paths: set[str]) -> dict[str, list[str]]:
    """Module path → kernel classes of its conv/linear ops in `edge` ("portable" for an
    op left outside the XNNPACK delegates)."""
    found: dict[str, list[str]] = {p: [] for p in paths}
    top = edge.exported_program().graph_module
    graphs = [(top.graph, False)]
    graphs += [(m.original_module.graph, True) for m in top.children() if hasattr(m, "backend_id")]
    for graph, delegated in graphs:
        for node in graph.nodes:
            if node.op != "call_function" or _op_name(node) not in _LAYER_OPS:
                continue
            owner = _owner(node, paths)
            if owner is not None:
                found[owner].append(_lowered_kernel(node) if delegated else "portable")
    return found


def lower(module: nn.Module, inputs: tuple[Tensor, ...], kernels: Mapping[str, str]) -> Any:
    """The `EdgeProgramManager` of `module(*inputs)` lowered to XNNPACK, with each layer of
    `kernels` (module path → kernel class, after `layer_kernels`) quantized as its class.

    Raises `ConversionError` naming the module and classes when a step fails.
    """
    require_executorch()
    with _quiet():  # importing exir warns of deprecations of its own
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackDynamicallyQuantizedPartitioner,
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower

    by_class: dict[str, set[str]] = {}
    for path, k in kernels.items():
        if k in QUANT_CONFIGS:
            by_class.setdefault(k, set()).add(path)
    try:
        with _quiet():
            module, inputs = _float_module(module, kernels), model_inputs(inputs, kernels)
            with torch.no_grad():
                # One eager call first: a module that computes constants on its first call
                # and caches them (MobileDiT's position table) must not trace that work.
                module(*inputs)
            program = torch.export.export(module, inputs)
            if by_class:
                program = _quantize(program, inputs, by_class)
            # Dynamically quantized layers first, each in a delegate of its own (ExecuTorch's
            # own recipe): grouped with the rest, a choose_qparams shared by layers of
            # other classes (to_q/to_k/to_v of one input) makes the partition cyclic.
            partitioners = [XnnpackDynamicallyQuantizedPartitioner(), XnnpackPartitioner()]
            return to_edge_transform_and_lower(program, partitioner=partitioners)
    except Exception as e:
        if "dependency cycles" in str(e):
            raise ConversionError(
                f"the XNNPACK partitioner found no cycle-free partition of "
                f"{type(module).__name__} for this mix of per-layer classes "
                f"{sorted(set(kernels.values()))} (an ExecuTorch limitation when layers of "
                "different classes share an input); time it with fewer classes per model, "
                "e.g. one float precision and one integer class"
            ) from e
        raise ConversionError(
            f"ExecuTorch could not lower {type(module).__name__} for "
            f"{sorted(set(kernels.values()))}: {type(e).__name__}: {e}"
        ) from e


@dataclass(frozen=True)
class Lowered:
    """An ExecuTorch program and the kernel classes XNNPACK runs for each planned layer."""

    program: bytes  # the .pte
    kernels: dict[str, list[str]]  # module path → classes of its conv/linear ops


def lowered(module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Lowered:
    """`module(*inputs)` as an ExecuTorch program with `plan`'s layers on their XNNPACK
    kernels (convs after `CONV_KERNEL_MAP`), cached by content: a table build lowers a
    block once per kernel class, and the classes convs alias share one program.

    Raises `ConversionError` when export, quantization or lowering fails, or when a
    planned layer does not run on XNNPACK as its class.
    """
    kernels = layer_kernels(module, plan)
    key = content_key(module, inputs, sorted(kernels.items()))
    cached = _PROGRAMS.get(key)
    if cached is not None:
        return cached
    edge = lower(module, inputs, kernels)
    found = delegated_kernels(edge, set(kernels))
    wrong = {p: f"{k}: got {found[p] or 'no op'}" for p, k in kernels.items() if found[p] != [k]}
    if wrong:
        raise ConversionError(
            f"these layers of {type(module).__name__} do not run on XNNPACK as planned: "
            f"{wrong} ('portable': left to ExecuTorch's portable kernels — the XNNPACK "
            "partitioner refused the op, e.g. a weight computed in forward rather than a "
            "parameter). Give the layer a static weight or plan it at a class XNNPACK takes."
        )
    try:
        with _quiet():
            result = Lowered(bytes(edge.to_executorch().buffer), found)
    except Exception as e:
        raise ConversionError(
            f"ExecuTorch could not serialize {type(module).__name__}: {type(e).__name__}: {e}"
        ) from e
    _PROGRAMS.put(key, result)
    return result


@contextlib.contextmanager
def _no_native_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for the body."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _threadpool(threads: int) -> None:
    """Size ExecuTorch's process-wide thread pool. Loaded XNNPACK programs keep a pointer
    to the pool, so resizing it under a live one would leave that pointer dangling."""
    from executorch.extension.pybindings import portable_lib as lib

    with _no_native_stderr():  # the pool logs its CPU probing and resizing at creation
        have = lib._threadpool_get_thread_count()
        if have == threads:
            return
        if len(_LOADED):
            raise ConversionError(
                f"ExecuTorch's thread pool has {have} threads and {len(_LOADED)} loaded "
                f"program(s) use it; it cannot become {threads} threads until they are "
                "released. Use one thread count per process."
            )
        lib._unsafe_reset_threadpool(threads)


@BACKENDS.register("executorch")
class ExecuTorchBackend(Backend):
    """ExecuTorch's runtime with the XNNPACK delegate, `threads` in its thread pool."""

    name = "executorch"
    kernel_map = KERNEL_MAP
    conv_kernel_map = CONV_KERNEL_MAP

    def __init__(self, threads: int = 1, warmup: int = 10, runs: int = 50, **options: Any) -> None:
        require_executorch()  # fail at once, not after a build's first conversion
        super().__init__(threads, warmup, runs, **options)

    def runtime(self) -> dict[str, str]:
        return {
            "runtime": "executorch",
            "version": version(),
            "delegate": "XNNPACK",
            "threads": str(self.threads),
            "quantizer": "XNNPACKQuantizer (PT2E)",
            "conv_kernel_map": ",".join(f"{k}->{v}" for k, v in CONV_KERNEL_MAP.items()),
        }

    def prepare(
        self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan
    ) -> Callable[[], Measurement]:
        program = lowered(module, inputs, plan).program
        with _quiet():  # "this API is experimental"
            from executorch.runtime import Runtime, Verification

        args = list(model_inputs(inputs, resolve_plan(module, plan, KERNEL_MAP)))
        _threadpool(self.threads)
        try:
            loaded = Runtime.get().load_program(program, verification=Verification.Minimal)
            method = loaded.load_method("forward")
        except Exception as e:
            raise ConversionError(f"the ExecuTorch runtime could not load the program: {e}") from e
        if method is None:
            raise ConversionError("the ExecuTorch program has no forward method")
        _LOADED.add(method)

        def run() -> object:
            return method.execute(args)

        def measure() -> Measurement:
            _ = loaded  # the program outlives its method
            return time_runs(run, self.warmup, self.runs)

        return measure

    def measure(self, module: nn.Module, inputs: tuple[Tensor, ...], plan: Plan) -> Measurement:
        return self.prepare(module, inputs, plan)()
