"""Errors of mqnas: one base class, each message says how to fix the problem.

Two kinds of error derive from `MqnasError`:

- `UserError`: what the user gave is wrong (a YAML key, a path, a model directory, an
  argument of a public function, a sample, a table that lacks keys, a budget). The fix is
  on their side, so the `nas` command prints the message alone and exits with status 2.
- `InternalError`: an invariant of mqnas' own objects (or of a plug-in family's) does not
  hold. No input can fix it, so the command keeps the traceback for the bug report.

Other direct subclasses of `MqnasError` are runtime failures of a valid experiment (a device
that went away, a run that diverged): the command prints their message and exits with 1.
"""

from __future__ import annotations


class MqnasError(Exception):
    """Base of every error mqnas raises on purpose."""


class UserError(MqnasError):
    """What the user gave is wrong; the message says what to change."""


class InternalError(MqnasError, RuntimeError):
    """An invariant of mqnas (or of a plug-in) failed: a bug, not a bad input."""

    def __str__(self) -> str:
        # Said here once, so every raise site states only what went wrong.
        return (
            f"{super().__str__()} (this is a bug in mqnas or in a plug-in; please report it "
            "with the traceback)"
        )


class ConfigError(UserError, ValueError):
    """A configuration (YAML, model config, teacher config) is invalid."""


class InvalidSampleError(UserError, ValueError):
    """A sample does not belong to its search space."""


class MissingLatencyEntryError(UserError, KeyError):
    """A latency table lacks keys that a cost estimate needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExportError(UserError):
    """An export directory cannot be read back: missing, damaged or foreign files."""


class RegistryError(UserError, KeyError):
    """A name is unknown to, or already taken in, a registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InfeasibleBudgetError(UserError, ValueError):
    """No architecture of the space (or none a strategy can find) meets the cost budgets."""
