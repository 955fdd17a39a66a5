"""Training checkpoints as safetensors + JSON, written atomically, resumed exactly.

Layout of a checkpoint directory (a run's ``checkpoints/``)::

    step_<n>/model.safetensors      model state_dict
    step_<n>/optimizer.safetensors  optimizer state tensors ``state.<param index>.<name>``
                                    and RNG states ``rng.torch_cpu`` (uint8), ``rng.torch_cuda``
    step_<n>/state.json             step, optimizer hyperparameters, numpy RNG state,
                                    trainer config, space, history, sha256 of both files
    latest.json                     JSON pointer {"step": n, "path": "step_<n>"}

A step directory is filled under a temporary name and renamed into place, and
`latest.json` is replaced by rename too, so a crash leaves either the old or the
new checkpoint, never half of one. Nothing is pickled.

`check_compatible` decides whether a checkpoint may resume a given run: same space,
task and weight parameters, same trajectory config (`nas.training.settings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from nas.errors import ConfigError, UserError
from nas.training.settings import TrainerConfig

log = logging.getLogger(__name__)

FORMAT = "mqnas.checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LATEST = "latest.json"


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: its directory, step, tensors and JSON state."""

    path: Path
    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    state: dict[str, Any]


# -- optimizer state ↔ flat tensors + JSON ----------------------------------------------
def flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors ``state.<i>.<name>`` and JSON metadata.

    Per-parameter tensors (AdamW: ``step`` (), ``exp_avg`` and ``exp_avg_sq`` shaped like
    the parameter) go to safetensors; hyperparameters of the param groups, and any
    non-tensor per-parameter value, to JSON.
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, pstate in state_dict["state"].items():
        for name, v in pstate.items():
            key = f"state.{idx}.{name}"
            if isinstance(v, Tensor):
                tensors[key] = v.detach().to("cpu").contiguous()
            else:
                scalars[key] = v
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten_optimizer`: a dict `optimizer.load_state_dict` accepts."""
    state: dict[int, dict[str, Any]] = {}
    items = [(k, v) for k, v in tensors.items() if k.startswith("state.")]
    items += list(meta.get("scalars", {}).items())
    for key, v in items:
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# -- writing ----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_safe(x: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(_json_safe(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cpu_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # safetensors wants contiguous tensors that share no storage; a state_dict may hold
    # views of one buffer (tied weights), so clone those.
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen:
            v = v.clone()
        elif ptr != -1:
            seen.add(ptr)
        out[k] = v
    return out


def write_checkpoint(
    directory: str | Path,
    step: int,
    model: Mapping[str, Tensor],
    optimizer: Mapping[str, Tensor],
    state: Mapping[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``<directory>/step_<step>`` atomically and point `latest.json` at it; with
    `keep`, delete all but the `keep` latest step directories afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # temporary directories a crash left mid-write (one writer per directory)
    for stale in [*directory.glob(".step_*"), *directory.glob(".old_step_*")]:
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / f"step_{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", dir=directory))
    try:
        save_file(_cpu_tensors(model), str(tmp / MODEL_FILE))
        save_file(_cpu_tensors(optimizer), str(tmp / OPTIM_FILE))
        files = {name: _sha256(tmp / name) for name in (MODEL_FILE, OPTIM_FILE)}
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, **state}
        full["files"] = files
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(_json_safe(full), f, indent=1, allow_nan=False)
        for name in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
            _fsync(tmp / name)
        if final.exists():  # re-written after a resume from an earlier step
            old = Path(tempfile.mkdtemp(prefix=f".old_step_{step}.", dir=directory))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_json_atomic(directory / LATEST, {"step": step, "path": final.name})
    log.info("checkpoint written: %s", final)
    if keep is not None:
        _prune(directory, keep, final)
    return final


def _prune(directory: Path, keep: int, latest: Path) -> None:
    """Delete the step directories older than the `keep` latest (never `latest`)."""
    steps = sorted(
        (int(p.name[5:]), p)
        for p in directory.glob("step_*")
        if p.is_dir() and p.name[5:].isdigit()
    )
    for _, path in steps[: max(0, len(steps) - max(keep, 1))]:
        if path != latest:
            shutil.rmtree(path, ignore_errors=True)


# -- reading ----------------------------------------------------------------------------
def latest_checkpoint(directory: str | Path) -> Path:
    """The step directory `<directory>/latest.json` points at (CheckpointError if none)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"no checkpoint directory {str(directory)!r}; train with checkpoint_dir set to "
            "write checkpoints first, or start fresh (resume=False)"
        )
    pointer = directory / LATEST
    if not pointer.is_file():
        steps = sorted(p.name for p in directory.glob("step_*") if p.is_dir())
        hint = (
            f'; it holds {steps[-3:]}: write {{"step": n, "path": "step_<n>"}} to '
            f"{str(pointer)!r} to resume from one of them"
            if steps
            else "; it holds no step_<n> directories either"
        )
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} has no {LATEST!r} file{hint}"
        )
    try:
        ref = json.loads(pointer.read_text())
        path = directory / str(ref["path"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f'{str(pointer)!r} is not a JSON pointer {{"step": n, "path": "step_<n>"}} '
            f"({e}); fix or delete it"
        ) from None
    if not path.is_dir():
        raise CheckpointError(
            f"{str(pointer)!r} points at {str(path)!r}, which does not exist; point it at an "
            "existing step_<n> directory"
        )
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one step directory (files present, hashes match, tensors load).

    Tensors load on the CPU; `load_state_dict` copies them to the model's device.
    """
    path = Path(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {STATE_FILE}; it is incomplete")
    try:
        state = json.loads(state_path.read_text())
    except ValueError as e:
        raise CheckpointError(
            f"{str(state_path)!r} is not valid JSON ({e}); the checkpoint is "
            "corrupt, resume from an earlier step"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(state_path)!r} is not an mqnas checkpoint (format {FORMAT!r} expected)"
        )
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(state_path)!r} has format version {state.get('format_version')!r}; this "
            f"mqnas reads version {FORMAT_VERSION}"
        )
    tensors: dict[str, dict[str, Tensor]] = {}
    for name in (MODEL_FILE, OPTIM_FILE):
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} lacks {name}; it is incomplete")
        want = state.get("files", {}).get(name)
        if want is not None and _sha256(f) != want:
            raise CheckpointError(
                f"{str(f)!r} does not match the sha256 recorded in {STATE_FILE}; the file is "
                "corrupt, resume from an earlier step"
            )
        try:
            tensors[name] = load_file(str(f), device="cpu")
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{str(f)!r} cannot be read as safetensors ({e})") from None
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        model=tensors[MODEL_FILE],
        optimizer=tensors[OPTIM_FILE],
        state=state,
    )


# -- resuming a run ---------------------------------------------------------------------
def check_compatible(
    ckpt: Checkpoint,
    *,
    identity: Mapping[str, Any],
    config: TrainerConfig,
    param_names: Sequence[str],
    model: Mapping[str, Tensor],
) -> None:
    """Raise `ConfigError` unless `ckpt` can resume the run described by the rest.

    `identity` is the run's ``space`` and ``task`` entries as the trainer writes them,
    `param_names` the trained parameters in the optimizer's order, `model` the current
    state_dict (its keys and shapes must match the checkpoint's model). A missing
    entry of the checkpoint's state raises `KeyError` for the caller to report.
    """
    state = ckpt.state
    where = f"checkpoint {str(ckpt.path)!r}"
    if state["space"] != identity["space"]:
        raise ConfigError(
            f"{where} was written for space {state['space']}, this supernet's space is "
            f"{identity['space']}; resume with a supernet of the same space and version"
        )
    if state["task"] != identity["task"]:
        raise ConfigError(
            f"{where} was trained on task {state['task']!r}, this trainer's task is "
            f"{identity['task']!r}"
        )
    diffs = config.trajectory_differences(state["config"])
    if diffs:
        raise ConfigError(
            f"{where} was written with another training config ({'; '.join(diffs)}); "
            "pass the same values to resume, or start a fresh run in a new checkpoint_dir"
        )
    if list(state["param_names"]) != list(param_names):
        theirs, have = set(state["param_names"]), set(param_names)
        raise ConfigError(
            f"{where} trained other weight parameters: only in checkpoint "
            f"{sorted(theirs - have)[:5]}, only in this supernet {sorted(have - theirs)[:5]}"
            + ("" if theirs != have else " (same names, another order)")
        )
    saved = ckpt.model
    missing = sorted(set(model) - set(saved))
    extra = sorted(set(saved) - set(model))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs supernet {tuple(v.shape)}"
        for k, v in model.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        raise ConfigError(
            f"{where} does not fit this supernet (missing {missing[:5]}, unexpected "
            f"{extra[:5]}, shapes {shapes[:5]}); the space config changed without a new "
            "space version"
        )
