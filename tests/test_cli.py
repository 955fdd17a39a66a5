"""The `nas` command: listing spaces, showing one, one-line errors with exit code 2."""

import subprocess
import sys

from nas.app.cli import main


def test_spaces_lists_registered_spaces(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert "mobile_unet" in out and "mobile_dit" in out and "test_mobile_unet" in out


def test_space_shows_labels_and_min_max(capsys):
    assert main(["space", "test_mobile_dit"]) == 0
    out = capsys.readouterr().out
    assert "width" in out and "min: test_mobile_dit[" in out and "max: test_mobile_dit[" in out


def test_unknown_space_is_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "nas.app.cli", "space", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "unknown search space 'nope'; known: mobile_dit" in r.stderr
