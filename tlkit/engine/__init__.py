"""The training engine: the loop (trainer), its options (config), checkpoints, schedules, EMA,
metrics and distributed helpers. Strategies plug into it through :mod:`tlkit.hookspecs`."""

from tlkit.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tlkit.engine.config import ConfigError, FitConfig
from tlkit.engine.trainer import PseudoLabels, Step, Trainer, TrainingError, TrainState

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
