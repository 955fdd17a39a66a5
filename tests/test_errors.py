"""The error hierarchy and what the `nas` command does with each kind.

A `UserError` is fixed by changing what the user gave: one line, exit 2. An `InternalError`
is a bug: exit 1 with the traceback to report. Another `MqnasError` is a run that failed:
one line, exit 1. A reader that closes the pipe early ends the command quietly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.errors import (
    ConfigError,
    ExportError,
    InfeasibleBudgetError,
    InternalError,
    InvalidSampleError,
    MissingLatencyEntryError,
    MqnasError,
    RegistryError,
    UserError,
)
from nas.policies.depth import gated
from nas.registry import Registry
from nas.space import SearchSpace
from nas.supernet import Family, SpaceEntry, Supernet, copy_active_weights

USER_ERRORS = [
    ConfigError,
    InvalidSampleError,
    MissingLatencyEntryError,
    ExportError,
    RegistryError,
    InfeasibleBudgetError,
]

# The console script when the venv has one, else the module it points at.
_SCRIPT = Path(sys.executable).with_name("nas")
NAS = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "nas.app.cli"]


# -- the hierarchy ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_a_user_error(cls):
    assert issubclass(cls, UserError) and issubclass(cls, MqnasError)
    assert not issubclass(cls, InternalError)


def test_user_errors_keep_their_builtin_bases():
    # Callers catch ValueError / KeyError from validation; those bases must stay.
    for cls in (ConfigError, InvalidSampleError, InfeasibleBudgetError):
        assert issubclass(cls, ValueError)
    for cls in (MissingLatencyEntryError, RegistryError):
        assert issubclass(cls, KeyError)
        assert str(cls("a message")) == "a message"  # not quoted as a KeyError would


def test_internal_error_is_not_a_user_error():
    assert issubclass(InternalError, MqnasError) and issubclass(InternalError, RuntimeError)
    assert not issubclass(InternalError, UserError)
    assert not issubclass(UserError, InternalError)
    text = str(InternalError("the layout of block 3 changed"))
    assert text.startswith("the layout of block 3 changed")
    assert "bug in mqnas or in a plug-in" in text and "traceback" in text


# -- invariants that are bugs, not inputs ----------------------------------------------------
def test_a_depth_unit_that_is_no_residual_block_is_an_internal_error():
    y, x = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4)
    with pytest.raises(InternalError, match="a depth unit must be a residual block"):
        gated(y, x, torch.tensor(1.0))


class _Tiny(Supernet):
    standalone_cls = nn.Linear

    def __init__(self, space: SearchSpace, quant_paths: dict[str, str]) -> None:
        super().__init__(space, quant_paths)
        self.fc = nn.Linear(3, 2)

    def _configure(self, sample):
        pass

    def standalone_config(self, sample):
        return {"in_features": 3, "out_features": 2}

    def example_inputs(self, batch=2, seed=0):
        return {"input": torch.zeros(batch, 3)}


def test_supernet_invariants_are_internal_errors():
    space = SearchSpace({"w": [1, 2]}, name="tiny")
    with pytest.raises(InternalError, match="are not labels of space 'tiny'"):
        _Tiny(space, {"fc.quant": "fc"})
    net = _Tiny(space, {})
    with pytest.raises(InternalError, match="supernet slice has shape"):
        copy_active_weights(net, nn.ModuleDict({"fc": nn.Linear(3, 5)}))
    with pytest.raises(InternalError, match="has no module 'head'"):
        copy_active_weights(net, nn.ModuleDict({"head": nn.Linear(3, 2)}))


# -- `nas` exit codes, in process ------------------------------------------------------------
def _space_raising(monkeypatch, exc: Exception) -> None:
    """`nas space broken` resolves to a plug-in space whose builder raises `exc`."""

    def make_space(config, name):
        raise exc

    spaces: Registry = Registry("search space")
    spaces.add("broken", SpaceEntry("broken", Family("broken", make_space, None, nn.Module), None))
    monkeypatch.setattr("nas.app.cli.registry", lambda: spaces)


class _DeviceGone(MqnasError):
    """A runtime failure: the experiment was valid, the run could not finish."""


@pytest.mark.parametrize(
    ("exc", "code", "traceback"),
    [
        (ConfigError("space.width: 7 is not a multiple of 4; use 8"), 2, False),
        (_DeviceGone("the phone went offline; reconnect it and rerun"), 1, False),
        (InternalError("block 3 lost its weights"), 1, True),
    ],
    ids=["user", "runtime", "internal"],
)
def test_exit_code_says_whose_move_it_is(monkeypatch, capsys, exc, code, traceback):
    from nas.app.cli import main

    _space_raising(monkeypatch, exc)
    assert main(["space", "broken"]) == code
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == f"nas: error: {exc}"
    assert ("Traceback (most recent call last)" in err) is traceback
    if not traceback:
        assert len(err.strip().splitlines()) == 1, err


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    from nas.app.cli import main

    _space_raising(monkeypatch, ZeroDivisionError("not ours to explain"))
    with pytest.raises(ZeroDivisionError):
        main(["space", "broken"])


def test_a_closed_stdout_ends_quietly(monkeypatch, capsys):
    from nas.app.cli import main

    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written: the flush must fail
    with open(w, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["space", "test_mobile_dit"]) == 141
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# -- `nas` exit codes, through the real entry point ------------------------------------------
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, **kw)


def test_user_error_is_one_line_and_exit_2():
    r = _run([*NAS, "space", "nope"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("nas: error: unknown search space 'nope'; known: ")


def test_internal_error_of_a_plugin_is_exit_1_with_traceback():
    script = textwrap.dedent(
        """
        import sys
        from torch import nn
        from nas.app.cli import main
        from nas.errors import InternalError
        from nas.supernet import Family, register_space

        def make_space(config, name):
            raise InternalError("plug-in space lost its labels")

        register_space("broken_plugin", Family("broken", make_space, None, nn.Module), None)
        sys.exit(main(["space", "broken_plugin"]))
        """
    )
    r = _run([sys.executable, "-c", script])
    assert r.returncode == 1, r.stderr
    assert "Traceback (most recent call last)" in r.stderr
    assert "in make_space" in r.stderr  # the frame that raised is in the report
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("nas: error: plug-in space lost its labels (this is a bug")


@pytest.mark.slow
def test_spaces_piped_into_head_exits_without_traceback():
    r = _run(["bash", "-c", f"{' '.join(NAS)} spaces | head -1"])
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 1 and "labels" in r.stdout
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
