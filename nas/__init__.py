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
    "load_exported",
    "register_space",
]
