"""Errors of mqnas: one base class, each message says how to fix the problem."""

from __future__ import annotations


class MqnasError(Exception):
    """Base of every error mqnas raises on purpose."""


class ConfigError(MqnasError, ValueError):
    """A configuration (YAML, model config, teacher config) is invalid."""


class InvalidSampleError(MqnasError, ValueError):
    """A sample does not belong to its search space."""


class MissingLatencyEntryError(MqnasError, KeyError):
    """A latency table lacks keys that a cost estimate needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExportError(MqnasError):
    """An architecture cannot be exported or an export cannot be read back."""


class RegistryError(MqnasError, KeyError):
    """A name is unknown to, or already taken in, a registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InfeasibleBudgetError(MqnasError, ValueError):
    """No architecture of the space (or none a strategy can find) meets the cost budgets."""
