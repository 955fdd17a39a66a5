"""mqnas: architecture and quantization-strategy search for on-device diffusion models.

`import nas` stays light: it pulls in torch and numpy only. Ray, Optuna and
the LiteRT/ONNX toolchains load in the adapters and backends that use them.
"""

from nas.logs import quiet_third_party

quiet_third_party()

from nas.errors import (  # noqa: E402
    ConfigError,
    ExportError,
    InvalidSampleError,
    MissingLatencyEntryError,
    MqnasError,
    RegistryError,
)
from nas.export import Exported, export, load_exported  # noqa: E402
from nas.quant import QuantScheme  # noqa: E402
from nas.registry import Registry  # noqa: E402
from nas.space import Choice, SearchSpace  # noqa: E402
from nas.spec import ArchSpec, BlockSpec, LayerSpec, StageSpec  # noqa: E402
from nas.supernet import SPACES, Supernet, get_space, register_space  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "Choice",
    "ConfigError",
    "ExportError",
    "Exported",
    "SPACES",
    "Supernet",
    "export",
    "get_space",
    "load_exported",
    "register_space",
    "InvalidSampleError",
    "LayerSpec",
    "MissingLatencyEntryError",
    "MqnasError",
    "QuantScheme",
    "Registry",
    "SearchSpace",
    "StageSpec",
]
