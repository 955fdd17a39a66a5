"""The `Predictor` contract, its registry and its (pickle-free) persistence.

A predictor maps encoded architectures X (N, F) (see `predictors.encoders`) to
predictions ordered like the labels y: y is LOWER-IS-BETTER unless the predictor was
built with ``higher_is_better=True``, so with the default a lower prediction means a
better architecture. `rank(X)` gives indices best first.

Persistence: `state_dict()` is a JSON-able dict; arrays (torch weights, training data)
go under its ``"tensors"`` key, which `save(dir)` writes to ``weights.safetensors``
beside ``predictor.json``. `load(dir)` rebuilds the predictor from its registry name and
constructor config. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nas.errors import ConfigError, MqnasError
from nas.registry import Registry

log = logging.getLogger(__name__)

STATE_FILE = "predictor.json"
TENSOR_FILE = "weights.safetensors"
FORMAT_VERSION = 1


class NotFittedError(MqnasError, RuntimeError):
    """A predictor was asked to predict (or save) before it was fitted."""


def check_X(X: Any, n_features: int | None = None) -> np.ndarray:
    """X as a finite float32 matrix (N, F)."""
    x = np.asarray(X, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(
            f"X must be a 2-D feature matrix (N, F), got shape {x.shape}; encode samples "
            "with predictors.SpaceEncoder(space).transform(samples)"
        )
    if n_features is not None and x.shape[1] != n_features:
        raise ConfigError(
            f"X has {x.shape[1]} features but the predictor was fitted on {n_features}; "
            "encode with the same SpaceEncoder settings"
        )
    if not np.all(np.isfinite(x)):
        raise ConfigError("X holds NaN or inf; fix the encoder inputs (cost features?)")
    return x


def check_Xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = check_X(X)
    t = np.asarray(y, dtype=np.float64).reshape(-1)
    if t.shape[0] != x.shape[0]:
        raise ConfigError(f"X has {x.shape[0]} rows but y has {t.shape[0]} labels")
    if not np.all(np.isfinite(t)):
        raise ConfigError("y holds NaN or inf; drop failed trials before fitting")
    if t.size < 2:
        raise ConfigError("fitting a predictor needs at least 2 labelled architectures")
    return x, t


class Predictor(ABC):
    """Base of every predictor. Subclasses set `name` and `learned` and implement
    `fit`, `predict`, `state_dict` and `load_state_dict`.

    `config` holds the JSON-able constructor keywords; `load` calls
    ``make_predictor(name, **config)`` before `load_state_dict`.
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = True  # False for zero-cost rankers (params, macs)

    def __init__(self, higher_is_better: bool = False, **config: Any) -> None:
        self.higher_is_better = bool(higher_is_better)
        self.config: dict[str, Any] = {"higher_is_better": self.higher_is_better, **config}

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weak: Any = None,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> Predictor:
        """Fit on features X (N, F) and labels y (N,). `weak` are weak labels (see the
        predictor), `X_val`/`y_val` an optional validation set for early stopping."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (N,) ordered like y (lower = better unless higher_is_better)."""

    def pretrain(self, X_weak: np.ndarray, W: np.ndarray) -> Predictor:
        """Learn from weak labels W (N, H) of the rows of `X_weak` before `fit`.

        Predictors that model weak labels (lambdarank) override this; the others ignore
        them, so that any predictor serves the predictor-guided search
        (`nas.ranking.Predictor`), which then ranks by the strong labels alone.
        """
        log.info("%s ignores weak labels; use 'lambdarank' to pretrain on them", self.name)
        return self

    def embed(self, X: np.ndarray) -> np.ndarray:
        """A representation (N, D) of the rows of X in which distance means dissimilarity.

        By default the features themselves; predictors with a learned representation
        (lambdarank's trunk) return that instead.
        """
        return check_X(X).astype(np.float64)

    def rank(self, X: np.ndarray) -> np.ndarray:
        """Indices of the rows of X, predicted best first."""
        p = np.asarray(self.predict(X), dtype=np.float64)
        return np.argsort(-p if self.higher_is_better else p, kind="stable")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; arrays under ``"tensors"`` (name → torch.Tensor)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> Predictor: ...

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``predictor.json`` (+ ``weights.safetensors``) into `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = dict(self.state_dict())
        tensors = state.pop("tensors", None) or {}
        doc = {"format": FORMAT_VERSION, "name": self.name, "config": self.config, "state": state}
        (d / STATE_FILE).write_text(json.dumps(doc, indent=1))
        if tensors:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, d / TENSOR_FILE
            )
        return d

    @staticmethod
    def load(directory: str | Path, **overrides: Any) -> Predictor:
        """Rebuild a saved predictor; `overrides` replace constructor keywords (e.g. device)."""
        d = Path(directory)
        path = d / STATE_FILE
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; save a predictor there with .save(dir)")
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{path} has format {doc.get('format')!r}; this version reads {FORMAT_VERSION}"
            )
        state = dict(doc["state"])
        if (d / TENSOR_FILE).is_file():
            state["tensors"] = load_file(d / TENSOR_FILE)
        pred = make_predictor(doc["name"], **{**doc["config"], **overrides})
        return pred.load_state_dict(state)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


PREDICTORS: Registry[type[Predictor]] = Registry("predictor")


def register_predictor(name: str):
    """Class decorator: register a `Predictor` subclass under `name` (sets `cls.name`)."""

    def deco(cls: type[Predictor]) -> type[Predictor]:
        cls.name = name
        PREDICTORS.add(name, cls)
        return cls

    return deco


def make_predictor(name: str, **kw: Any) -> Predictor:
    """Build a registered predictor: ``make_predictor("lambdarank", hidden=64, seed=0)``."""
    import predictors  # noqa: F401  (registers the built-in predictors)

    return PREDICTORS.get(name)(**kw)


def as_tensor_dict(arrays: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v)
        for k, v in arrays.items()
    }
