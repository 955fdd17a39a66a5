"""Logging set-up shared by the library and the CLI."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm.auto import tqdm

# torchao (a dependency of the LiteRT exporter) is found by diffusers at import and
# warns that its CUDA kernels cannot load; on a CPU machine that is expected noise.
_NOISY = (
    "torchao",
    "diffusers.quantizers.torchao.torchao_quantizer",
    "torch.utils._pytree",
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed"
)


def quiet_third_party() -> None:
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)


OWN = ("nas", "latency_tables", "search_spaces", "predictors")


def setup_cli_logging(verbose: bool = False) -> None:
    """Our packages log at INFO (DEBUG with -v); third-party libraries only warn."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in OWN:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_third_party()


def progress_bar(total: int, *, desc: str, unit: str, enabled: bool, initial: int = 0) -> tqdm:
    """The progress bar of a long loop that resumes at `initial` (trials, training steps):
    one look for every such bar, sized to the terminal, silent when not `enabled`."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
    )
