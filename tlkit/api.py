"""The one-call entry points: fit, fit_two_stage, load."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from tlkit import two_stage
from tlkit.backbones.base import TransferModel
from tlkit.datasets import load as load_dataset
from tlkit.datasets.domain import Domain, DomainPair
from tlkit.engine import trainer as engine
from tlkit.engine.config import FitConfig, check_known_options
from tlkit.engine.lr_finder import DEFAULT_METHOD, LRFinder, find_lr
from tlkit.errors import ConfigError
from tlkit.run import Run, load

DEFAULT_BACKBONE = "efficientnet_lite0"


class Trainer(engine.Trainer):
    """Runs one fit: ``tlkit.Trainer(data, "small_cnn", epochs=3).fit()`` returns a :class:`Run`.

    It takes what :func:`fit` takes (``resume`` goes to :meth:`fit`), so a trainer can be built,
    inspected (``trainer.config``, ``trainer.strategies``) and then run. ``config=`` gives a ready
    :class:`FitConfig` instead of ``backbone``, ``epochs`` and options. ``model`` may also be an
    earlier :class:`Run`, whose model is copied (the run keeps its own) -- e.g. to adapt it
    source-free. The training loop itself is :class:`tlkit.engine.trainer.Trainer`.
    """

    def __init__(
        self,
        data: DomainPair | Domain | str,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        *,
        epochs: int = 5,
        model: TransferModel | Run | None = None,
        config: FitConfig | None = None,
        observers: tuple[Any, ...] | list[Any] = (),
        classes: list[str] | None = None,
        train_transform: Any = None,
        **options: Any,
    ) -> None:
        if isinstance(backbone, FitConfig):
            raise ConfigError(
                "tlkit.Trainer(data, backbone, ...) takes the backbone second, as tlkit.fit "
                "does; pass a FitConfig as config=."
            )
        if config is None:
            config, model, transform = _configure(backbone, epochs, model, options)
            train_transform = transform if transform is not None else train_transform
        elif options or backbone is not DEFAULT_BACKBONE or epochs != 5:
            raise ConfigError("pass either config= or backbone, epochs and options, not both.")
        if isinstance(data, str):
            data = load_dataset(data, seed=config.seed)
        if isinstance(model, Run):
            classes = classes or model.classes or None
            model = copy.deepcopy(model.model)
        self.lr_finder: LRFinder | None = None  # lr="find": what the sweep found, once it ran
        self._sweep = (data, config, model, classes, train_transform)
        super().__init__(
            data,
            config,
            model=model,
            classes=classes,
            observers=observers,
            train_transform=train_transform,
        )

    def train(self, resume: str | Path | bool | None = None) -> Trainer:
        """Train (see :meth:`fit`); with ``lr="find"`` the sweep runs first, here: in the thread
        that trains (a dashboard's Train click returns at once), never where it was built."""
        if self.config.lr == "find":
            self._find_lr()
        return super().train(resume)

    def fit(self, resume: str | Path | bool | None = None) -> Run:
        """Train; ``resume`` is a checkpoint path (or ``True`` for ``checkpoint_dir/last.pt``).
        The Run keeps what ``lr="find"`` swept as ``run.lr_finder``."""
        return Run.from_trainer(self.train(resume))

    def _find_lr(self) -> None:
        """Sweep on a copy of the untrained model with the arguments the trainer was built
        with, say the pick in one line, and train with it."""
        data, config, model, classes, train_transform = self._sweep
        self.lr_finder = find_lr(
            data, config, model=model, classes=classes, train_transform=train_transform
        )
        print(self.lr_finder.describe())
        self.config = dataclasses.replace(self.config, lr=self.lr_finder.suggestion)


def _configure(
    backbone: str | nn.Module, epochs: int, model: Any, options: dict[str, Any]
) -> tuple[FitConfig, Any, Any]:
    """``(config, model, train_transform)`` of :func:`fit`'s arguments: a module passed as the
    backbone becomes the model, a ``transforms.v2`` pipeline passed as ``augment`` the
    trainer's ``train_transform``."""
    check_known_options(options)
    if isinstance(backbone, nn.Module) and model is None:
        model_arg: Any = backbone
        name = getattr(backbone, "name", "custom")
    else:
        model_arg = model
        net = model.model if isinstance(model, Run) else model  # a finished run to adapt further
        name = net.backbone.name if net is not None else backbone
        if net is not None and isinstance(backbone, str) and backbone not in (DEFAULT_BACKBONE, name):
            raise ConfigError(
                f"backbone={backbone!r} but model= is a {name!r} network, and the model decides "
                f"the network. Leave backbone= out (or pass {name!r}); to train a {backbone!r}, "
                "leave model= out."
            )
    if not isinstance(name, str):
        raise ConfigError(f"backbone must be a name or an nn.Module, got {type(name).__name__}.")
    options = dict(options)
    transform = options.pop("augment", None) if callable(options.get("augment")) else None
    if transform is not None:
        options["augment"] = "custom"  # the pipeline itself is passed to the trainer
    config = FitConfig(backbone=name, epochs=epochs, **options)
    if config.source_free and model_arg is None:
        raise ConfigError(
            "source_free=True adapts a trained model to unlabelled target data: pass "
            "model=<an earlier Run or TransferModel>; without one it would train a random network."
        )
    return config, model_arg, transform


def fit(
    data: DomainPair | Domain | str,
    backbone: str | nn.Module = DEFAULT_BACKBONE,
    *,
    epochs: int = 5,
    model: TransferModel | None = None,
    resume: str | Path | bool | None = None,
    observers: tuple[Any, ...] | list[Any] = (),
    **options: Any,
) -> Run:
    """Fine-tune a pretrained backbone on ``data`` and return the :class:`Run`.

    The common path is one call: ``tlkit.fit(tlkit.datasets.load("digits"), epochs=3)``.

    Args:
        data: a task (``DomainPair``), a labelled ``Domain``, or a bundled dataset name.
        backbone: a name from ``tlkit.backbones.list_backbones()`` or an ``nn.Module``.
        epochs: total epochs, including ``freeze_epochs`` with a frozen backbone.
        model: a ready ``TransferModel`` (overrides ``backbone``), or an earlier :class:`Run`
            to continue from -- with ``source_free=True``, adapt it to unlabelled target data
            only (``data`` is then the target Domain, or a task whose target is used).
        resume: a checkpoint to continue from, or ``True`` for ``checkpoint_dir/last.pt``.
        observers: objects with ``@tlkit.hookimpl`` observer hooks for this run.
        **options: any :class:`tlkit.FitConfig` field. The main ones:

            * ``mode``: ``"fine_tune"`` (``freeze_epochs`` head-only, then all layers with
              discriminative rates), ``"full"`` (all layers from the start) or
              ``"feature_extraction"`` (frozen backbone, features computed once and cached).
              The default ``"auto"`` is ``"fine_tune"`` for a pretrained backbone and
              ``"full"`` for one without pretrained weights (a frozen random backbone
              teaches the head nothing).
            * ``lr`` (head rate; backbone groups get ``lr / lr_spread`` .. ``lr``; ``"find"``
              runs :func:`lr_find` first, trains with its pick and prints it in one line),
              ``batch_size`` (default ``"auto"``: 64, at most a quarter of the training
              samples, so that a small set still takes several steps an epoch; every sample
              trains each epoch, the last batch smaller), ``target_batch_ratio``
              (unlabelled images per step, as a multiple
              of ``batch_size``; FixMatch's mu), ``schedule`` ("cosine", "onecycle", "constant"), ``warmup``,
              ``weight_decay``, ``grad_clip``, ``ema``, ``freeze_bn``, ``augment``.
            * strategies: ``loss``, ``pseudo_label``, ``adapt``, ``regularize`` (names from
              ``tlkit.strategies()``, or ``(name, {options})``).
            * ``seed``, ``device``, ``precision`` ("auto" = bf16 on CUDA), ``channels_last``
              ("auto" = on for image data, on CPU and GPU; ``False`` turns it off),
              ``compile``, ``checkpoint_dir``, ``checkpoint_every``, ``monitor``, ``max_steps``.
            * data: ``image_size`` (file-backed images are cropped to it), ``augment``
              (``"auto"``: crops and flips for photos, nothing for digits and tensors; ``True``
              for the data's augmentation; ``"colour"``: random background and ink colours
              per source image and nothing else (no crops or flips; files are squashed to the
              square); a ``transforms.v2`` pipeline of your own),
              ``num_workers`` (DataLoader workers for files; ``"auto"`` up to 4),
              ``feature_ram_budget`` (GB of frozen features kept in memory; beyond it they go
              to a reusable file), ``domain_bn`` ("auto": what the strategies declare;
              "separate": BatchNorm sees each domain apart and keeps running statistics per
              domain, the model ending with the target's; "shared": one pass over both),
              ``source_free`` (adapt ``model=`` with unlabelled target data only).
            * imbalanced classes (a warning names both when the largest class has over 5x the
              labelled samples of the smallest, and at least 20 of its own):
              ``class_weight="balanced"`` weights each sample's loss by ``n / (K * n_class)``
              (any classification loss; a list with one weight per class, or a dict by class
              name, gives your own), ``sampler="balanced"`` draws every class equally often,
              with replacement (in memory and from files).
            * ``monitor``: the metric that picks ``best.pt`` (``"auto"``: source test accuracy,
              else the train loss; a validator's score only when named, e.g.
              ``validate="info_max", monitor="score_info_max"``). ``patience=N`` stops after N
              epochs without a better value (``run.stop_reason`` says so);
              ``restore_best=True`` returns the best epoch's weights, kept in memory with or
              without ``checkpoint_dir`` (``run.restored_from`` names the epoch and metric).
              In an adaptation run both refuse ``monitor="auto"``: name the metric that may
              choose epochs there.
            * ``log_dir``: ``metrics.csv`` with every logged value (a row per log window and
              per epoch), and TensorBoard scalars when ``tensorboard`` is installed
              (``pip install tensorboard``); without it, the CSV alone.
    """
    trainer = Trainer(data, backbone, epochs=epochs, model=model, observers=observers, **options)
    return trainer.fit(resume=resume)


def lr_find(
    data: DomainPair | Domain | str,
    backbone: str | nn.Module = DEFAULT_BACKBONE,
    *,
    model: TransferModel | Run | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    method: str = DEFAULT_METHOD,
    **options: Any,
) -> LRFinder:
    """Find a learning rate for ``fit(data, backbone, **options)`` (fastai's ``lr_find``).

    Trains a copy of the model for up to ``num_it`` steps while the rate grows exponentially
    from ``start_lr`` to ``end_lr``, stops when the loss runs away, and picks a rate: ``method``
    is ``"edge"`` (a fifth of the lowest loss's rate; the default, closest to a grid's best
    rate in ``benchmarks/results/lr_finder.md``: within one std on 3 of 5 tasks), ``"steep"``
    (the steepest fall), ``"valley"`` (the middle of the longest fall, fastai's default; lower)
    or ``"minimum"`` (a tenth of the lowest loss's rate). A ``fine_tune`` run is swept in its
    unfrozen phase, where a rate too high destroys the pretrained features. The model passed,
    the optimiser and the global random state are left as they were.
    Returns an :class:`~tlkit.engine.lr_finder.LRFinder`: ``.suggestion``, ``.lrs``,
    ``.losses`` (smoothed) and ``.plot()``. ``fit(..., lr="find")`` runs it and trains with
    ``.suggestion``.
    """
    options.pop("lr", None)  # the sweep sets every rate
    epochs = options.pop("epochs", 5)
    config, model_arg, transform = _configure(backbone, epochs, model, options)
    if isinstance(data, str):
        data = load_dataset(data, seed=config.seed)
    classes = None
    if isinstance(model_arg, Run):
        classes, model_arg = model_arg.classes or None, model_arg.model
    return find_lr(
        data,
        config,
        model=model_arg,
        classes=classes,
        train_transform=transform,
        start_lr=start_lr,
        end_lr=end_lr,
        num_it=num_it,
        method=method,
    )


def fit_two_stage(
    source: DomainPair | Domain | str | Run,
    target: DomainPair | Domain | str,
    backbone: str | nn.Module = "efficientnet_lite0",
    *,
    source_epochs: int = 5,
    target_epochs: int = 5,
    source_options: dict[str, Any] | None = None,
    **options: Any,
) -> Run:
    return two_stage.fit_two_stage(
        fit, source, target, backbone, source_epochs=source_epochs,
        target_epochs=target_epochs, source_options=source_options, **options,
    )  # fmt: skip


fit_two_stage.__doc__ = two_stage.fit_two_stage.__doc__


__all__ = ["fit", "fit_two_stage", "load", "lr_find"]
