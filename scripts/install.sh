#!/usr/bin/env bash
# The install command: a .venv with torch (CPU build) first, then the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -U pip
# torch first, alone: pip resolves torch==2.13.0 to the CPU wheel on disk.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -r requirements.lock
.venv/bin/pip install -q --no-deps -e .
# What the environment was made from (.ci/run reinstalls when it changes).
cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1 > .venv/.mqnas-lock
