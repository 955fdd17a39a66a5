"""The run directory's layout: the name of every file and folder a run writes.

``runs/<experiment>/<timestamp>/`` holds:

- ``config.yaml``: the resolved experiment (every default and path written out);
- ``checkpoints/`` and ``supernet.safetensors``: supernet training and its final weights;
- ``trials.jsonl`` (append-only, the source of truth) and ``trials.parquet`` (a snapshot);
  ``failed_trials.jsonl``: failed trials a resume took out to run again;
- ``searcher_state.json``: the strategy's JSON state (the Ray Tune adapter resumes from it);
  ``ray/``: Ray Tune's own experiment files;
- ``oneshot.json``: the trace of a one-shot search;
- ``pareto.png``, ``report.md``, ``summary.json``: the end of the run;
- ``export/<trial>/``: exported architectures (``train_history.json`` after ``nas train``).

Only names live here (no imports): `nas.runs.RunDir` joins them to a run's path.
"""

from __future__ import annotations

CONFIG_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
SUPERNET_WEIGHTS = "supernet.safetensors"
TRIALS_JSONL = "trials.jsonl"
TRIALS_PARQUET = "trials.parquet"
RETIRED_TRIALS = "failed_trials.jsonl"
SEARCHER_STATE = "searcher_state.json"
RAY_DIR = "ray"
ONESHOT_TRACE = "oneshot.json"
PARETO_PLOT = "pareto.png"
REPORT = "report.md"
SUMMARY = "summary.json"
EXPORT_DIR = "export"
TRAIN_HISTORY = "train_history.json"
