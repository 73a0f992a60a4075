"""The errors tlkit raises for problems a user can fix. Each message names the problem and the fix.

They live in one low-level module so that every layer (registry, engine, result, CLI) raises and
catches the same classes without importing the layers above it. :class:`tlkit.datasets.DataError`
(bad input data) and :class:`tlkit.backbones.BackboneError` (a backbone that cannot be built) live
with their packages.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid training option; the message names the option and the allowed values."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, foreign, or does not fit the model or the run."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the message says where and what to do."""


class PluginError(RuntimeError):
    """A strategy plugin is missing, broken, failed inside a hook, or returned a bad result."""


class StrategyOptionError(PluginError, ValueError):
    """An option value was rejected (by a strategy, or by :class:`tlkit.FitConfig`).

    ``option``, ``value`` and ``wanted`` say which option, what it got and what it takes, when the
    error comes from :mod:`tlkit.options`."""

    def __init__(self, message: str, option: str = "", value: object = None, wanted: str = ""):
        super().__init__(message)
        self.option, self.value, self.wanted = option, value, wanted


class UnknownStrategyError(PluginError, KeyError):
    """A run named a strategy that is not installed."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


__all__ = [
    "CheckpointError",
    "ConfigError",
    "PluginError",
    "StrategyOptionError",
    "TrainingError",
    "UnknownStrategyError",
]
