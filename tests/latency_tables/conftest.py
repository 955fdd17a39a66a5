"""Fixtures of the latency-table tests: the stand-in adb and its phone."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from stand_in import install_stand_in, load_state


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The stand-in adb first on PATH, one Pixel 8 attached, a local benchmark_model."""
    bin_dir, state_dir = tmp_path / "bin", tmp_path / "phone"
    install_stand_in(bin_dir, state_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    binary = tmp_path / "benchmark_model"  # stands for the aarch64 binary; the stand-in runs it
    binary.write_text("#!/system/bin/sh\n")
    binary.chmod(0o755)
    serial = load_state(state_dir)["devices"][0]["serial"]
    return SimpleNamespace(state_dir=state_dir, binary=binary, serial=serial)
