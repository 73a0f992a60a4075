"""tlkit: transfer learning for people who work in notebooks.

    >>> import tlkit
    >>> task = tlkit.datasets.load("synth-digits->digits")
    >>> run = tlkit.fit(task, backbone="small_cnn", epochs=3)
    >>> run.evaluate(task.target_test)["accuracy"]

Public API: :func:`fit`, :func:`fit_two_stage`, :func:`load`, :class:`Trainer`,
:class:`FitConfig`, :class:`Run`, :class:`Tokenizer` (text -> token ids, saved with the run),
:mod:`datasets`, :mod:`backbones`, :func:`register`,
:func:`strategies`, :data:`hookimpl`. Plugin authors need only ``tlkit``: :data:`hookimpl`,
:class:`Step`, :class:`PseudoLabels`, :class:`OwnOptimizer` (a strategy module's own optimiser),
:mod:`options` (checking a strategy's options),
:mod:`strategy_tools` (entropy, BatchNorm layers and swaps, EMA), :func:`domain_context` /
:func:`forward_domain` and the errors; :class:`tlkit.hookspecs.TrainerView` lists what a hook may
use of the trainer.
"""

from tlkit import backbones, datasets, options, strategy_tools
from tlkit.api import Trainer, fit, fit_two_stage, load, lr_find
from tlkit.engine import FitConfig, PseudoLabels, Step
from tlkit.errors import (
    CheckpointError,
    ConfigError,
    PluginError,
    StrategyOptionError,
    TrainingError,
)
from tlkit.hookspecs import hookimpl
from tlkit.ranking import rank_backbones
from tlkit.registry import register, strategies, unregister
from tlkit.run import Run
from tlkit.step import OwnOptimizer, domain_context, forward_domain
from tlkit.tokenizer import Tokenizer

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # pragma: no cover - exercised through IPython
    """``%load_ext tlkit``: register the ``%tlkit`` magics (see :mod:`tlkit.notebook.magics`)."""
    from tlkit.notebook.magics import load_ipython_extension as load

    load(ipython)


def dashboard(**options):
    """The training dashboard widget (ipywidgets + matplotlib); see :mod:`tlkit.notebook`."""
    from tlkit.notebook.dashboard import Dashboard

    return Dashboard(**options)


def __getattr__(name: str):
    import importlib

    if name == "widgets":  # imported on first use: ipywidgets is only needed in notebooks
        return importlib.import_module("tlkit.notebook")
    if name in ("label_issues", "cross_validation", "export", "exercises"):
        return importlib.import_module(f"tlkit.{name}")
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "FitConfig",
    "OwnOptimizer",
    "PluginError",
    "PseudoLabels",
    "Run",
    "Step",
    "StrategyOptionError",
    "Trainer",
    "Tokenizer",
    "TrainingError",
    "backbones",
    "dashboard",
    "datasets",
    "fit",
    "fit_two_stage",
    "hookimpl",
    "load",
    "lr_find",
    "options",
    "rank_backbones",
    "register",
    "strategies",
    "strategy_tools",
    "unregister",
    "widgets",
    "domain_context",
    "forward_domain",
    "__version__",
]
