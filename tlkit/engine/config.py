"""FitConfig: every knob of a run, checked and converted up front, saved in checkpoints as plain
values.

Options come from Python, YAML/JSON files and ``tlkit fit --set key=value``, so each field is
converted to its type here (``"3e-4"`` -> ``0.0003``, ``"false"`` -> ``False``) and a value that
cannot be converted fails before any training with a :class:`ConfigError` naming the option.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tlkit import options as opt
from tlkit.engine.schedules import SCHEDULES
from tlkit.errors import ConfigError, StrategyOptionError

MODES = ("auto", "fine_tune", "full", "feature_extraction")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
#: How BatchNorm sees a step's source and target batches: one pass over both ("shared"), or a
#: pass per domain ("separate"), so that each is normalised with its own statistics (and keeps
#: its own running statistics: tlkit.engine.domain_stats); "auto":
#: what the run's strategies declare (``domain_bn = "separate"`` on DANN, CDAN and DSBN), else
#: "shared" (benchmarks/results/domain_adaptation.md measures both for each method).
DOMAIN_BN = ("auto", *opt.DOMAIN_BN)
#: ``augment`` values besides True/False (see :func:`tlkit.engine.feeding.resolve_augment`).
AUGMENT_KINDS = ("auto", "photos", "digits", "colour", "none", "custom")
#: How the labelled source is drawn each epoch: a shuffle of every sample once, or "balanced":
#: as many draws, with replacement, each class equally likely (tlkit.engine.class_balance).
SAMPLERS = ("shuffle", "balanced")
#: Largest ``image_size`` accepted: beyond it a single image no longer fits a sensible batch.
MAX_IMAGE_SIZE = 4096
#: Largest ``seed``: every generator tlkit seeds (PyTorch's, NumPy's, Python's) accepts it.
MAX_SEED = 2**32 - 1
#: Largest ``target_batch_ratio``: FixMatch's mu is 7; far beyond, one step's target batch no
#: longer fits in memory (the process is killed instead of failing with a message).
MAX_TARGET_BATCH_RATIO = 64.0
#: Backbones that read non-image inputs, by what they read (``Domain.backbone_kwargs`` keys).
TENSOR_BACKBONES_FOR = {
    "in_features": ("mlp",),
    "vocab_size": ("text_bag", "text_cnn", "text_lstm", "text_gru"),
}
#: Set while a saved config is read back: a run saved under rules it met then still loads.
_READING_SAVED = contextvars.ContextVar("tlkit_reading_saved_config", default=False)


@dataclass
class FitConfig:
    """Options of :func:`tlkit.fit`; see its docstring for what each does."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool | str = "auto"
    backbone_weights: str | None = None
    mode: str = "auto"  # fine_tune for a pretrained backbone, full for one trained from scratch
    epochs: int = 5
    freeze_epochs: int = 1
    batch_size: int | str = "auto"  # 64, at most a quarter of the training set (batch_plan)
    target_batch_ratio: float = 1.0  # unlabelled target images per step = ratio * batch_size
    lr: float | str = 1e-3  # "find": tlkit.fit picks it with the lr finder first
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
    augment: bool | str = "auto"  # "auto": crops/flips for photos, none for digits/tensors
    source_free: bool = False  # adapt a trained model with unlabelled target data only
    domain_bn: str = "auto"  # "separate": BatchNorm sees source and target batches apart
    loss: Any = "auto"
    pseudo_label: Any = None
    adapt: Any = None
    regularize: Any = None
    validate: Any = None
    monitor: str = "auto"
    patience: int | None = None  # stop after this many epochs without a better monitor value
    restore_best: bool = False  # return the weights of the monitor's best epoch
    class_weight: Any = None  # "balanced", or one weight per class (a list, or a dict)
    sampler: str = "shuffle"  # "balanced": every class drawn equally often
    log_dir: str | None = None  # metrics.csv, and TensorBoard scalars when installed
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | str = "auto"  # "auto": NHWC for images (CPU and GPU), off otherwise
    compile: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    log_every: int = 10
    eval_batch_size: int = 256
    num_workers: int | str = "auto"  # DataLoader workers for file-backed data ("auto": up to 4)
    prefetch_factor: int = 2
    feature_ram_budget: float = 2.0  # GB of cached features kept in RAM; beyond it, on disk
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self._convert()
        except StrategyOptionError as exc:  # name the option with the value it got
            raise ConfigError(
                f"{exc.option}={exc.value!r} is not valid: it must be {exc.wanted}."
            ) from None

    def _convert(self) -> None:
        """Convert every field to its type and check its range (see the module docstring)."""
        ints = {  # name: minimum
            "epochs": 1,
            "freeze_epochs": 0,
            "checkpoint_every": 0,
            "log_every": 1,
            "eval_batch_size": 1,
        }
        for name, minimum in ints.items():
            setattr(self, name, opt.integer(name, getattr(self, name), minimum=minimum))
        self.seed = opt.integer("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.batch_size != "auto":
            self.batch_size = opt.integer("batch_size", self.batch_size, minimum=1)
        if isinstance(self.lr, str) and self.lr.strip().lower() == "find":
            self.lr = "find"  # tlkit.fit runs the lr finder and trains with its pick
        else:
            self.lr = opt.positive("lr", self.lr)
        for name in ("target_batch_ratio", "lr_spread"):
            setattr(self, name, opt.positive(name, getattr(self, name)))
        for name in ("weight_decay", "dropout"):
            setattr(self, name, opt.non_negative(name, getattr(self, name)))
        if self.target_batch_ratio > MAX_TARGET_BATCH_RATIO:
            raise ConfigError(
                f"target_batch_ratio={self.target_batch_ratio:g} would read "
                f"{self.target_batch_ratio:g} x batch_size target images per step; use at most "
                f"{MAX_TARGET_BATCH_RATIO:g} (FixMatch's mu is 7)."
            )
        self.warmup = opt.fraction("warmup", self.warmup, closed_top=False)  # of all steps
        if self.dropout >= 1:
            raise ConfigError(f"dropout={self.dropout} is a probability; use a value in [0, 1).")
        self.grad_clip = opt.optional(opt.positive, "grad_clip", self.grad_clip)
        self.ema = opt.optional(opt.fraction, "ema", self.ema, closed_top=False)
        if self.ema == 0:
            raise ConfigError("ema=0 is not a decay; use e.g. 0.999 (None turns EMA off).")
        self.max_steps = opt.optional(opt.integer, "max_steps", self.max_steps, minimum=1)
        self.image_size = opt.optional(
            opt.integer, "image_size", self.image_size, minimum=8, maximum=MAX_IMAGE_SIZE
        )
        for name in ("freeze_bn", "compile", "progress", "source_free"):
            setattr(self, name, opt.boolean(name, getattr(self, name)))
        if self.augment == "color":  # the American spelling
            self.augment = "colour"
        if not (isinstance(self.augment, str) and self.augment in AUGMENT_KINDS):
            try:
                self.augment = opt.boolean("augment", self.augment)
            except StrategyOptionError:  # name every valid value, not only the booleans
                kinds = [k for k in AUGMENT_KINDS if k != "custom"]  # "custom": set by fit()
                raise ConfigError(
                    f"augment={self.augment!r} is not valid: it must be True, False, one of "
                    f"{kinds}, or a transform of your own."
                ) from None
        if self.num_workers != "auto":
            self.num_workers = opt.integer("num_workers", self.num_workers, minimum=0)
        self.prefetch_factor = opt.integer("prefetch_factor", self.prefetch_factor, minimum=1)
        self.feature_ram_budget = opt.non_negative("feature_ram_budget", self.feature_ram_budget)
        for name in ("pretrained", "channels_last"):
            value = getattr(self, name)
            if value != "auto":
                setattr(self, name, opt.boolean(name, value))
        opt.choice("mode", self.mode, MODES)
        opt.choice("precision", self.precision, PRECISIONS)
        opt.choice("optimizer", self.optimizer, OPTIMIZERS)
        opt.choice("schedule", self.schedule, SCHEDULES)
        opt.choice("domain_bn", self.domain_bn, DOMAIN_BN)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone={self.backbone!r} must be a backbone name.")
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ConfigError(f"monitor={self.monitor!r} must be a metric name or 'auto'.")
        self.device = _check_device(self.device)
        self._convert_training_options()
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        if self.backbone_weights is not None:
            self.backbone_weights = os.fspath(self.backbone_weights)
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra={self.extra!r} must be a mapping.")
        if not _READING_SAVED.get():
            self._check_together()

    def _check_together(self) -> None:
        """Rules between options, for a run about to train (a saved run's config is not
        re-judged: it trained as it says)."""
        if self.mode in ("auto", "fine_tune") and self.freeze_epochs > self.epochs:
            raise ConfigError(
                f"freeze_epochs={self.freeze_epochs} is more than epochs={self.epochs}: the "
                "backbone would never be unfrozen. Use freeze_epochs < epochs, or "
                "mode='feature_extraction' to train the head only."
            )

    def _convert_training_options(self) -> None:
        """Early stopping, the kept epoch, class balance and the log folder."""
        self.patience = opt.optional(opt.integer, "patience", self.patience, minimum=1)
        self.restore_best = opt.boolean("restore_best", self.restore_best)
        opt.choice("sampler", self.sampler, SAMPLERS)
        self.class_weight = _class_weight(self.class_weight)
        if self.log_dir is not None:
            if not isinstance(self.log_dir, (str, os.PathLike)) or not os.fspath(self.log_dir):
                raise ConfigError(f"log_dir={self.log_dir!r} must be a folder path.")
            self.log_dir = os.fspath(self.log_dir)

    def check(self) -> None:
        """Re-check after fields were assigned by hand (``dataclasses.replace`` does it itself)."""
        self.__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, so checkpoints load with ``weights_only=True``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        check_known_options(values)
        token = _READING_SAVED.set(True)
        try:
            return cls(**values)
        finally:
            _READING_SAVED.reset(token)


def check_known_options(names: Any) -> None:
    """Refuse names that are not :class:`FitConfig` fields, with the closest known name (the
    one check for :func:`tlkit.fit`, ``tlkit fit --set``, config files and the dashboard)."""
    import difflib

    known = sorted(f.name for f in dataclasses.fields(FitConfig))
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return
    close = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
    hints = [f"'{m[0]}' for '{u}'" for u, m in close.items() if m]
    meant = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ConfigError(f"unknown fit() options {unknown}{meant}; known options: {known}.")


def count_option(name: str, value: Any, minimum: int) -> int:
    """An integer option outside :class:`FitConfig` (``run.predict``'s ``batch_size``,
    ``num_workers``), checked by the same rule and failing with a :class:`ConfigError`."""
    try:
        return opt.integer(name, value, minimum=minimum)
    except StrategyOptionError as exc:
        raise ConfigError(f"{name}={value!r} is not valid: it must be {exc.wanted}.") from None


def check_backbone_fits(backbone: str, modality: str, needs: Mapping[str, Any]) -> None:
    """Refuse a backbone name that cannot read the data, naming those that can. ``needs`` is
    the data's :meth:`~tlkit.datasets.Domain.backbone_kwargs` (empty for images)."""
    key = backbone.strip().lower().replace("-", "_")
    tensor_names = [n for names in TENSOR_BACKBONES_FOR.values() for n in names]
    fitting = next((names for k, names in TENSOR_BACKBONES_FOR.items() if k in needs), ())
    if modality == "image":
        if key in tensor_names:
            raise ConfigError(
                f"backbone '{backbone}' reads feature vectors or token ids, not images; use an "
                "image backbone, e.g. 'small_cnn' or 'efficientnet_lite0' (tlkit backbones)."
            )
        return
    if key not in fitting:
        what = "feature vectors" if "in_features" in needs else "token ids"
        names = " or ".join(repr(n) for n in fitting) or "a tensor backbone (an nn.Module)"
        raise ConfigError(
            f"backbone '{backbone}' cannot read this data ({what}, not images); use {names}."
        )


def _class_weight(value: Any) -> Any:
    """``None``, ``"balanced"``, a list of weights (class order) or a dict of weights by class
    name or index; weights are non-negative numbers, not all zero. Whether they fit the data's
    classes is checked when the data is known (:mod:`tlkit.engine.class_balance`)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, str):
        if value.strip().lower() == "balanced":
            return "balanced"
        raise ConfigError(
            f"class_weight={value!r} is not valid: use 'balanced', a list with one weight per "
            "class, or a dict {class name: weight}."
        )
    if isinstance(value, dict):
        weights = {k: opt.non_negative(f"class_weight[{k!r}]", v) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        weights = [opt.non_negative(f"class_weight[{i}]", v) for i, v in enumerate(value)]
    else:
        raise ConfigError(
            f"class_weight={value!r} is not valid: use 'balanced', a list with one weight per "
            "class, or a dict {class name: weight}."
        )
    values = list(weights.values()) if isinstance(weights, dict) else weights
    if not values or not any(v > 0 for v in values):
        raise ConfigError(f"class_weight={value!r} gives no class a positive weight.")
    return weights


def _check_device(value: Any) -> str:
    if value == "auto":
        return value
    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={value!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from None


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)
