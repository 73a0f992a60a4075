"""The training engine: the loop (trainer), its options (config), the step types, hook calls,
data feeding, optimisation phases, logs, checkpoints and resuming, schedules, EMA, metrics and
distributed helpers. Strategies plug into it through :mod:`tlkit.hookspecs`."""

from tlkit.engine.checkpoint import load_checkpoint, save_checkpoint
from tlkit.engine.config import FitConfig
from tlkit.engine.trainer import Trainer  # the loop; tlkit.Trainer adds fit() -> Run
from tlkit.errors import CheckpointError, ConfigError, TrainingError
from tlkit.step import PseudoLabels, Step, TrainState

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FitConfig",
    "PseudoLabels",
    "Step",
    "Trainer",
    "TrainState",
    "TrainingError",
    "load_checkpoint",
    "save_checkpoint",
]
