"""Trials and the per-run trial store: append-only JSON lines plus a parquet snapshot.

`trials.jsonl` is the record: one JSON object per line, appended with
open(O_APPEND) → write → flush → fsync under an advisory lock, so a crash
leaves at most a torn last line; reading skips undecodable lines with a
warning, and the next append starts on a fresh line. The same id appearing
again (a retried trial) replaces the earlier record on read. `trials.parquet`
is a snapshot of `frame()` written atomically (temp file + os.replace) for
notebooks; `load_run` reads whichever is newer.

Non-finite floats are written as JSON's common extensions ``NaN`` / ``Infinity``
(what Python's json reads back), so records round-trip exactly.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.io import SAFE_COMPONENT, append_durably, atomic_write_text
from nas.layout import CONFIG_FILE, RETIRED_TRIALS, TRIALS_JSONL, TRIALS_PARQUET

log = logging.getLogger(__name__)

STATES = ("completed", "failed", "pruned")
MAX_SAMPLE_COLUMNS = 64  # wider spaces keep only the JSON `sample` column
BASE_COLUMNS = ("id", "state", "spec_hash", "created", "error")
_FIELDS = (
    "id",
    "sample",
    "spec_hash",
    "metrics",
    "cost",
    "state",
    "timings",
    "provenance",
    "error",
    "created",
)
# A trial id names a directory (``export/<id>/``) and comes from files a user may have been
# sent, so it must be one harmless path component: Ray Tune's ids (``70ffac67``,
# ``1a2b3_00001``) and ``uuid4().hex[:12]`` fit; "/", "\", ".." and a leading "." or "-"
# (hidden files, option-like arguments) do not.
_SAFE_ID = re.compile(SAFE_COMPONENT)


def safe_trial_id(value: object) -> str:
    """`value` if it is a safe trial id (see `_SAFE_ID`), else `ConfigError` saying why."""
    if isinstance(value, str) and _SAFE_ID.fullmatch(value) and ".." not in value:
        return value
    raise ConfigError(
        f"trial id {value!r} is not allowed: an id is 1-128 letters, digits, '_', '-' or '.', "
        "starts with a letter or digit and has no '..' (it names the directory export/<id>/)"
    )


def trial_dir(base: str | os.PathLike[str], trial_id: str, inside: str | os.PathLike[str]) -> Path:
    """``base/<trial_id>``, refused unless the id is safe and the resolved path (symlinks
    followed: a run directory may come from someone else) lies inside `inside`."""
    out = Path(base) / safe_trial_id(trial_id)
    root = Path(inside).resolve()
    if not out.resolve().is_relative_to(root):
        raise ConfigError(
            f"{out} resolves to {out.resolve()}, outside {root} (a symlink in the run "
            "directory?); remove the link or pass --out DIR"
        )
    return out


@dataclass(frozen=True)
class Trial:
    """One evaluated (or failed / pruned) architecture of a search.

    metrics: measured values (``val_loss`` …); cost: predicted costs (``latency_ms``,
    ``params`` …); timings: seconds (``evaluate_s`` …); provenance: strategy,
    evaluator, seed, host …; created: unix time.
    """

    id: str
    sample: dict[str, Any]
    spec_hash: str
    metrics: dict[str, float]
    cost: dict[str, float]
    state: str
    timings: dict[str, float]
    provenance: dict[str, Any]
    error: str | None = None
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        safe_trial_id(self.id)
        if self.state not in STATES:
            raise ConfigError(f"trial {self.id}: state {self.state!r} is unknown; use {STATES}")
        for name in ("sample", "metrics", "cost", "timings", "provenance"):
            v = getattr(self, name)
            if not isinstance(v, Mapping):
                raise ConfigError(f"trial {self.id}: {name} must be a mapping, got {v!r}")
            object.__setattr__(self, name, dict(v))  # own copy: the record must not change
        for name in ("metrics", "cost", "timings"):
            d = getattr(self, name)
            for k, v in d.items():
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise ConfigError(f"trial {self.id}: {name}[{k!r}] = {v!r} is not a number")
            object.__setattr__(self, name, {str(k): float(v) for k, v in d.items()})
        object.__setattr__(self, "created", float(self.created))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``Trial.from_json(t.to_json()) == t``)."""
        return {
            "id": self.id,
            "sample": dict(self.sample),
            "spec_hash": self.spec_hash,
            "metrics": dict(self.metrics),
            "cost": dict(self.cost),
            "state": self.state,
            "timings": dict(self.timings),
            "provenance": json.loads(json.dumps(self.provenance)),
            "error": self.error,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Trial:
        missing = [k for k in _FIELDS if k not in d and k != "error"]
        if missing:
            raise ConfigError(f"a trial record lacks {missing}; it has {sorted(d)}")
        return cls(**{k: d[k] for k in _FIELDS if k in d})


class TrialStore:
    """The trials of one run directory (see module doc)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    @property
    def jsonl(self) -> Path:
        return self.run_dir / TRIALS_JSONL

    @property
    def parquet(self) -> Path:
        return self.run_dir / TRIALS_PARQUET

    # -- writing ----------------------------------------------------------------------------------
    def append(self, trial: Trial) -> None:
        """Append one line durably (flush + fsync); safe across threads and processes."""
        append_durably(self.jsonl, _line(trial))

    def snapshot(self) -> Path:
        """Write `frame()` to ``trials.parquet`` atomically; returns its path."""
        df = self.frame()
        tmp = self.run_dir / f".{TRIALS_PARQUET}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, self.parquet)
        finally:
            if tmp.exists():
                tmp.unlink()
        return self.parquet

    @property
    def retired(self) -> Path:
        return self.run_dir / RETIRED_TRIALS

    def retire_failed(self) -> list[Trial]:
        """Move the failed trials out of the record (to be run again); return them.

        Their records are appended to ``failed_trials.jsonl`` first (durably), then
        ``trials.jsonl`` is rewritten without them atomically: a crash in between leaves
        them in both files, and the next call moves them again.
        """
        trials = self.trials()
        failed = [t for t in trials if t.state == "failed"]
        if not failed:
            return []
        append_durably(self.retired, b"".join(_line(t) for t in failed))
        keep = [t for t in trials if t.state != "failed"]
        atomic_write_text(self.jsonl, "".join(_line(t).decode() for t in keep))
        self.snapshot()
        return failed

    # -- reading ----------------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        """All trials, in order of first appearance; a repeated id takes its latest record."""
        if not self.jsonl.exists():
            return []
        by_id: dict[str, Trial] = {}
        with open(self.jsonl, "rb") as f:
            lines = f.read().split(b"\n")
        for no, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                where = "last line" if no >= len(lines) - 1 else f"line {no}"
                log.warning(
                    "%s: ignoring a torn or corrupt %s (a crash while writing?)", self.jsonl, where
                )
                continue
            try:
                t = Trial.from_json(d)
            except (ConfigError, TypeError) as e:
                raise ConfigError(
                    f"{self.jsonl}, line {no}: not a trial record: {e}; fix or delete that line"
                ) from None
            by_id[t.id] = t
        return list(by_id.values())

    def ids(self) -> list[str]:
        return [t.id for t in self.trials()]

    def __len__(self) -> int:
        return len(self.trials())

    def frame(self):
        """The trials as a pandas DataFrame (columns: see `trials_frame`)."""
        return trials_frame(self.trials())


def _line(trial: Trial) -> bytes:
    return json.dumps(trial.to_json(), separators=(",", ":")).encode() + b"\n"


def _column(values: list[Any]) -> list[Any]:
    """One parquet-friendly column: scalars of one kind stay, anything else becomes JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} or kinds <= {bool} or kinds <= {str}:
        return values
    return [None if v is None else json.dumps(v) for v in values]


def trials_frame(trials: Iterable[Trial]):
    """DataFrame of trials, one row each.

    Columns: ``id, state, spec_hash, created, error``; each metric and each cost by
    its name (a metric and a cost of the same name is a `ConfigError`); each timing
    as ``time.<name>``; each provenance key as ``prov.<name>``; ``sample`` (JSON
    text); and ``sample.<label>`` per label when the samples have ≤ 64 labels.
    """
    import pandas as pd

    trials = list(trials)
    metric_names = _names(t.metrics for t in trials)
    cost_names = _names(t.cost for t in trials)
    clash = sorted(set(metric_names) & set(cost_names))
    if clash:
        raise ConfigError(
            f"{clash} is both a metric and a cost of the trials; rename one of them (e.g. "
            f"report the measured value as 'measured_{clash[0]}')"
        )
    bad = sorted(
        n
        for n in metric_names + cost_names
        if n in BASE_COLUMNS or n == "sample" or n.startswith(("time.", "prov.", "sample."))
    )
    if bad:
        raise ConfigError(f"metric/cost name(s) {bad} collide with the trial table's own columns")
    time_names = _names(t.timings for t in trials)
    prov_names = _names(t.provenance for t in trials)
    labels = _names(t.sample for t in trials)

    cols: dict[str, list[Any]] = {
        "id": [t.id for t in trials],
        "state": [t.state for t in trials],
        "spec_hash": [t.spec_hash for t in trials],
        "created": [t.created for t in trials],
        "error": [t.error for t in trials],
    }
    for n in metric_names:
        cols[n] = [t.metrics.get(n, math.nan) for t in trials]
    for n in cost_names:
        cols[n] = [t.cost.get(n, math.nan) for t in trials]
    for n in time_names:
        cols[f"time.{n}"] = [t.timings.get(n, math.nan) for t in trials]
    for n in prov_names:
        cols[f"prov.{n}"] = _column([t.provenance.get(n) for t in trials])
    cols["sample"] = [json.dumps(t.sample) for t in trials]
    if len(labels) <= MAX_SAMPLE_COLUMNS:
        for lab in labels:
            cols[f"sample.{lab}"] = _column([t.sample.get(lab) for t in trials])
    df = pd.DataFrame(cols)
    df["created"] = df["created"].astype("float64")
    return df


def _names(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys in order of first appearance."""
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)


def load_run(path: str | os.PathLike[str]):
    """The trials of a run directory as a DataFrame (`trials.parquet` if newer, else the JSONL).

    `path` may also name ``trials.jsonl`` or ``trials.parquet`` inside the run directory.
    A run that has no trial yet (its supernet trains first, or every trial is still
    running) gives a frame with no rows, so notebooks can say "nothing yet" instead of failing.
    """
    import pandas as pd

    p = Path(path)
    if p.is_file() and p.name in (TRIALS_JSONL, TRIALS_PARQUET):
        p = p.parent
    if not p.is_dir():
        raise ConfigError(
            f"run directory {p} does not exist; give the directory `nas search` wrote "
            "(runs/<experiment>/<timestamp>/)"
        )
    store = TrialStore(p)
    jl, pq = store.jsonl, store.parquet
    if pq.exists() and (not jl.exists() or pq.stat().st_mtime_ns > jl.stat().st_mtime_ns):
        df = pd.read_parquet(pq)
    elif jl.exists() or (p / CONFIG_FILE).is_file():
        df = store.frame()
    else:
        raise ConfigError(
            f"{p} holds no trials ({TRIALS_JSONL} or {TRIALS_PARQUET}) and no {CONFIG_FILE}; give a run "
            "directory (runs/<experiment>/<timestamp>/)"
        )
    if len(df) == 0:
        log.info("%s holds no trials yet", p)
    return df
