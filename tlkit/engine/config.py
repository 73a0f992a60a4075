"""FitConfig: every knob of a run, validated up front, saved in checkpoints as plain values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tlkit.engine.schedules import SCHEDULES

MODES = ("auto", "fine_tune", "full", "feature_extraction")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")


class ConfigError(ValueError):
    """An invalid training option; the message names the option and the allowed values."""


@dataclass
class FitConfig:
    """Options of :func:`tlkit.fit`; see its docstring for what each does."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool | str = "auto"
    backbone_weights: str | None = None
    mode: str = "auto"  # fine_tune for a pretrained backbone, full for one trained from scratch
    epochs: int = 5
    freeze_epochs: int = 1
    batch_size: int = 64
    target_batch_ratio: float = 1.0  # unlabelled target images per step = ratio * batch_size
    lr: float = 1e-3
    lr_spread: float = 10.0
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup: float = 0.05
    grad_clip: float | None = None
    ema: float | None = None
    freeze_bn: bool = False
    dropout: float = 0.0
    image_size: int | None = None
    augment: bool = False
    loss: Any = "auto"
    pseudo_label: Any = None
    adapt: Any = None
    regularize: Any = None
    validate: Any = None
    monitor: str = "auto"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    log_every: int = 10
    eval_batch_size: int = 256
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        def choice(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not valid; choose one of {list(allowed)}.")

        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
            if not ok:
                what = "a non-negative" if allow_zero else "a positive"
                raise ConfigError(f"{name}={value!r} must be {what} number.")

        choice("mode", MODES)
        choice("precision", PRECISIONS)
        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        for name in (
            "epochs",
            "batch_size",
            "target_batch_ratio",
            "lr",
            "eval_batch_size",
            "log_every",
            "lr_spread",
        ):
            positive(name)
        for name in ("freeze_epochs", "weight_decay", "warmup", "checkpoint_every", "dropout"):
            positive(name, allow_zero=True)
        if not isinstance(self.epochs, int) or not isinstance(self.batch_size, int):
            raise ConfigError("epochs and batch_size must be whole numbers.")
        if self.warmup >= 1:
            raise ConfigError(f"warmup={self.warmup} is a fraction of all steps; use < 1.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip={self.grad_clip} must be positive (or None for off).")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"ema={self.ema} is a decay in (0, 1), e.g. 0.999 (None for off).")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1 (or None for no limit).")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size={self.image_size} is too small; use >= 8 pixels.")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, so checkpoints load with ``weights_only=True``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown options {unknown}; known options: {sorted(known)}.")
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)
