"""tlkit: transfer learning for people who work in notebooks.

    >>> import tlkit
    >>> task = tlkit.datasets.load("synth-digits->digits")
    >>> run = tlkit.fit(task, backbone="small_cnn", epochs=3)
    >>> run.evaluate(task.target_test)["accuracy"]

Public API: :func:`fit`, :func:`fit_two_stage`, :func:`load`, :class:`Trainer`,
:class:`FitConfig`, :class:`Run`, :mod:`datasets`, :mod:`backbones`, :func:`register`,
:func:`strategies`, :data:`hookimpl`.
"""

from tlkit import backbones, datasets
from tlkit.api import fit, fit_two_stage, load
from tlkit.engine import CheckpointError, ConfigError, FitConfig, Trainer, TrainingError
from tlkit.hookspecs import hookimpl
from tlkit.registry import PluginError, register, strategies, unregister
from tlkit.run import Run

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FitConfig",
    "PluginError",
    "Run",
    "Trainer",
    "TrainingError",
    "backbones",
    "datasets",
    "fit",
    "fit_two_stage",
    "hookimpl",
    "load",
    "register",
    "strategies",
    "unregister",
    "__version__",
]
