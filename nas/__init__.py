"""mqnas: architecture and quantization-strategy search for on-device diffusion models.

`import nas` stays light: it pulls in torch and numpy only. Ray, Optuna and
the LiteRT/ONNX toolchains load in the adapters and backends that use them.
"""

from nas.logs import quiet_third_party

quiet_third_party()

from nas.errors import (
    ConfigError,
    ExportError,
    InvalidSampleError,
    MissingLatencyEntryError,
    MqnasError,
    RegistryError,
)
from nas.export import Exported, export, load_exported
from nas.quant import QuantScheme
from nas.registry import Registry
from nas.space import Choice, SearchSpace
from nas.spec import ArchSpec, BlockSpec, LayerSpec, StageSpec
from nas.supernet import SPACES, Supernet, get_space, register_space

__version__ = "0.1.0"

# Loaded on first use (pandas / matplotlib stay out of `import nas`).
_LAZY = {"load_run": "nas.trials", "pareto_front": "nas.pareto", "hypervolume": "nas.pareto"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


__all__ = [
    "SPACES",
    "ArchSpec",
    "BlockSpec",
    "Choice",
    "ConfigError",
    "ExportError",
    "Exported",
    "InvalidSampleError",
    "LayerSpec",
    "MissingLatencyEntryError",
    "MqnasError",
    "QuantScheme",
    "Registry",
    "RegistryError",
    "SearchSpace",
    "StageSpec",
    "Supernet",
    "export",
    "get_space",
    "hypervolume",
    "load_exported",
    "load_run",
    "pareto_front",
    "register_space",
]
