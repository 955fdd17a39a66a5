"""Export a sub-network as a diffusers model directory, and read it back.

Layout of an export directory (no pickle anywhere):
- ``config.json`` + ``diffusion_pytorch_model.safetensors``: the standalone
  model as `save_pretrained` writes it, loadable with the class's
  `from_pretrained` (e.g. ``MobileUNet.from_pretrained(dir)``);
- ``arch.json``: space name and version, model class, sample, spec, metrics;
- ``quant_plan.json``: module path → quant scheme of every quantized layer.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.diffusers_compat import pickle_only_problem
from nas.errors import ExportError, InternalError
from nas.io import read_json, share, write_json
from nas.spec import ArchSpec, Sample
from nas.supernet import SPACES, Supernet

log = logging.getLogger(__name__)

ARCH_FILE = "arch.json"
PLAN_FILE = "quant_plan.json"
FORMAT_VERSION = 1
# Modules an arch.json may name for its model class: importing anything else from
# a file a user received would run code they did not choose.
ALLOWED_PACKAGES = ("search_spaces",)


@dataclass(frozen=True)
class Exported:
    """An export read back: the model, its spec, quant plan and metrics."""

    path: Path
    model: nn.Module
    spec: ArchSpec
    quant_plan: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def export(
    supernet: Supernet,
    sample: Sample,
    out_dir: str | Path,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Extract `sample` from `supernet` and write it to `out_dir` (see module doc)."""
    out = Path(out_dir)
    sample = supernet.space.canonical(sample)
    spec = supernet.space.freeze(sample)
    model = supernet.extract(sample)
    plan = supernet.quant_plan(sample)
    missing = sorted(set(plan) - {n for n, _ in model.named_modules()})
    if missing:
        # The family's own spec and extract() disagree on layer paths: no input causes it.
        raise InternalError(f"quant plan names layers the exported model lacks: {missing[:3]}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    write_json(
        out / ARCH_FILE,
        {
            "format": FORMAT_VERSION,
            "space": spec.space,
            "space_version": spec.version,
            "model_class": _qualname(type(model)),
            "hash": spec.hash,
            "arch": spec.short(),
            "sample": sample,
            "spec": spec.to_dict(),
            "metrics": metrics or {},
        },
    )
    write_json(out / PLAN_FILE, plan)
    share(out)  # save_pretrained's safetensors file is private (0600) otherwise
    log.info("exported %s to %s", spec.short(), out)
    return out


def _model_class(qualname: str) -> type[nn.Module]:
    for name in SPACES.names():
        cls = SPACES.get(name).family.standalone_cls
        if _qualname(cls) == qualname:
            return cls
    module, _, attr = qualname.rpartition(".")
    if module.split(".")[0] not in ALLOWED_PACKAGES:
        raise ExportError(
            f"arch.json names model class {qualname!r}, which is not a registered space's "
            f"model; only classes from {list(ALLOWED_PACKAGES)} are loaded"
        )
    cls = getattr(importlib.import_module(module), attr, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ExportError(f"arch.json names model class {qualname!r}, which does not exist")
    return cls


def load_exported(path: str | Path, device: str | torch.device | None = None) -> Exported:
    """Read an export directory written by `export`."""
    path = Path(path)
    for name in (ARCH_FILE, PLAN_FILE, "config.json"):
        if not (path / name).is_file():
            raise ExportError(
                f"{path} is not an mqnas export: {name} is missing (write one with "
                "`nas export RUN --trial ID` or nas.export(...))"
            )
    arch = read_json(path / ARCH_FILE)
    if arch.get("format") != FORMAT_VERSION:
        raise ExportError(
            f"{path / ARCH_FILE} has format {arch.get('format')!r}; this mqnas reads format "
            f"{FORMAT_VERSION}. Re-export it with this version."
        )
    cls = _model_class(arch["model_class"])
    problem = pickle_only_problem(path)
    if problem:
        raise ExportError(
            f"{problem}; export it again with `nas export RUN --trial ID` (exports are "
            "written as safetensors)"
        )
    try:  # safetensors only: a pickled .bin someone sent runs code when it is loaded
        model = cls.from_pretrained(  # type: ignore[attr-defined]
            path, use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise ExportError(
            f"cannot load the model of export {path}: {e}; export it again with "
            "`nas export RUN --trial ID`"
        ) from None
    if device is not None:
        model.to(device)
    spec = ArchSpec.from_dict(arch["spec"])
    plan = read_json(path / PLAN_FILE)
    return Exported(path, model, spec, plan, arch.get("metrics", {}))
