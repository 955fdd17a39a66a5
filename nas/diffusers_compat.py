"""What the families share to stand in for diffusers models: inputs and teacher loading."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas.errors import ConfigError

log = logging.getLogger(__name__)

QUANTIZER_PREFIXES = ("wq_", "aq_")


def as_timesteps(timestep: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Timesteps of shape (B,) as diffusers makes them (int → int64, float → float64)."""
    if timestep is None:
        raise ValueError(
            "timestep is required: an int, a float or a tensor of shape () or (batch,)"
        )
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        t = torch.tensor([timestep], dtype=dtype, device=device)
    else:
        t = timestep.to(device)
        t = t[None] if t.dim() == 0 else t
    if t.dim() != 1 or t.shape[0] not in (1, batch):
        raise ValueError(
            f"timestep has shape {tuple(t.shape)}; pass an int, a float, or a tensor of shape "
            f"() or (batch,) = ({batch},)"
        )
    return t.expand(batch)


class PositionalForward(nn.Module):
    """A diffusers model called with positional tensors, returning its output tensor.

    Exporters (ONNX, LiteRT) and latency backends take exactly this. The model sits
    under `PREFIX`, so its layer at path p is at ``PREFIX + p`` here.
    """

    PREFIX = "model."

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, tensors)), return_dict=False)[0]


def standalone_hook(
    standalone_cls: type[nn.Module],
    config_fn: Callable[[Any, Any, dict[str, Any]], dict[str, Any]],
    inputs_fn: Callable[[Any, int, int], dict[str, Tensor]],
) -> Callable[[Any, Any, dict[str, Any], int], tuple[nn.Module, tuple[Tensor, ...]]]:
    """A family's `standalone_model` hook: the float model of a sample (no quant plan:
    runtimes apply their own kernels) wrapped by `PositionalForward`, and its inputs."""

    def build(
        cfg: Any, space: Any, sample: dict[str, Any], batch: int
    ) -> tuple[nn.Module, tuple[Tensor, ...]]:
        config = dict(config_fn(cfg, space, sample), quant_plan={})
        inputs = inputs_fn(cfg, batch, 0)
        model = standalone_cls(**config).eval()
        return PositionalForward(model, tuple(inputs)), tuple(inputs.values())

    return build


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_only_problem(path: Path) -> str | None:
    """Why the weights of model directory `path` will not be loaded, or None.

    mqnas loads safetensors only: a torch pickle (``.bin``, what ``save_pretrained(...,
    safe_serialization=False)`` writes) runs code while it is unpickled, and teachers and
    exports are directories people download or are sent.
    """
    if any(path.glob("*.safetensors")):  # also shards and variants (``*.fp16.safetensors``)
        return None
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        return (
            f"{path} holds its weights only as {', '.join(pickles)} (a torch pickle, which mqnas "
            "does not unpickle)"
        )
    return f"{path} holds no .safetensors weights"


def read_teacher_config(
    path: str | Path,
    class_name: str | None,
    subfolder: str | None,
    key: str = "supernet.teacher",
) -> tuple[Path, dict[str, Any]]:
    """The directory and config of a diffusers model saved with `save_pretrained`.

    A pipeline directory is accepted too (its `subfolder`, e.g. ``unet``). `class_name`
    None accepts any class. Errors name `key`, the config key the path came from, and
    refuse directories without safetensors weights (see `pickle_only_problem`).
    """
    path = Path(path)
    saver = f"{class_name or 'the model'}.save_pretrained(dir)"
    if not path.is_dir():
        raise ConfigError(
            f"{key}: teacher {str(path)!r} is not a directory; give a directory written by {saver}"
        )
    if (
        subfolder
        and not (path / "config.json").is_file()
        and (path / subfolder / "config.json").is_file()
    ):
        path = path / subfolder
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(
            f"{key}: teacher directory {str(path)!r} has no config.json; save it with {saver}"
        )
    try:
        conf = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{key}: {cfg_file} is not valid UTF-8 JSON ({e}); re-save the teacher with {saver}"
        ) from None
    if not isinstance(conf, dict):
        raise ConfigError(
            f"{key}: {cfg_file} holds a JSON {type(conf).__name__}, not an object; re-save the "
            f"teacher with {saver}"
        )
    got = conf.get("_class_name", class_name)
    if class_name is not None and got != class_name:
        raise ConfigError(
            f"{key}: teacher {str(path)!r} is a {got}; this family loads a {class_name}"
        )
    problem = pickle_only_problem(path)
    if problem:
        raise ConfigError(
            f"{key}: {problem}; re-save it with "
            f"{class_name or conf.get('_class_name') or 'the model'}.save_pretrained(dir, "
            "safe_serialization=True)"
        )
    return path, conf


def copy_teacher_state(
    target: nn.Module,
    state: Mapping[str, Tensor],
    may_lack: Callable[[str], bool] = lambda name: False,
    adapt: Callable[[Tensor, Tensor], Tensor] = lambda src, dst: src,
) -> None:
    """Copy a teacher's state dict into `target` by name, refusing any mismatch.

    Every teacher tensor must have a counterpart of the same shape (after
    `adapt(src, dst)`); every target tensor must come from the teacher except
    learned quantizer parameters and those `may_lack(name)` accepts.
    """
    own = target.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise ConfigError(f"teacher has parameters the supernet lacks: {unexpected[:4]}")
    missing = [
        k
        for k in own
        if k not in state
        and not k.rsplit(".", 1)[-1].startswith(QUANTIZER_PREFIXES)
        and not may_lack(k)
    ]
    if missing:
        raise ConfigError(
            f"teacher lacks supernet parameters {missing[:4]}; is it the max architecture?"
        )
    with torch.no_grad():
        for k, v in state.items():
            dst = own[k]
            v = adapt(v.detach(), dst)
            if tuple(v.shape) != tuple(dst.shape):
                raise ConfigError(
                    f"teacher parameter {k} has shape {tuple(v.shape)}, supernet {tuple(dst.shape)}"
                )
            dst.copy_(v.to(dst.dtype))
    log.info("copied %d teacher tensors into %s", len(state), type(target).__name__)
