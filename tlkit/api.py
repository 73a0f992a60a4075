"""The one-call entry points: fit, fit_two_stage, load."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from tlkit.backbones.base import TransferModel, make_head
from tlkit.datasets import load as load_dataset
from tlkit.datasets.domain import Domain, DomainPair
from tlkit.engine import trainer as engine
from tlkit.engine.config import FitConfig
from tlkit.errors import ConfigError
from tlkit.run import Run, load

_OPTIONS = {f.name for f in dataclasses.fields(FitConfig)}


class Trainer(engine.Trainer):
    """Runs one fit: ``Trainer(data, config).fit()`` returns a :class:`tlkit.Run`.

    The engine's training loop (:class:`tlkit.engine.trainer.Trainer`: see it for the arguments)
    with the result object on top. ``model`` may also be an earlier :class:`Run`, whose model is
    copied (the run keeps its own) -- e.g. to adapt it source-free.
    """

    def __init__(
        self, data: Any, config: FitConfig | None = None, *, model: Any = None, **kw: Any
    ) -> None:
        if isinstance(model, Run):
            kw.setdefault("classes", model.classes or None)
            model = copy.deepcopy(model.model)
        super().__init__(data, config, model=model, **kw)

    def fit(self, resume: str | Path | bool | None = None) -> Run:
        """Train; ``resume`` is a checkpoint path (or ``True`` for ``checkpoint_dir/last.pt``)."""
        return Run.from_trainer(self.train(resume))


def fit(
    data: DomainPair | Domain | str,
    backbone: str | nn.Module = "efficientnet_lite0",
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
            * ``lr`` (head rate; backbone groups get ``lr / lr_spread`` .. ``lr``),
              ``batch_size``, ``target_batch_ratio`` (unlabelled images per step, as a multiple
              of ``batch_size``; FixMatch's mu), ``schedule`` ("cosine", "onecycle", "constant"), ``warmup``,
              ``weight_decay``, ``grad_clip``, ``ema``, ``freeze_bn``, ``augment``.
            * strategies: ``loss``, ``pseudo_label``, ``adapt``, ``regularize`` (names from
              ``tlkit.strategies()``, or ``(name, {options})``).
            * ``seed``, ``device``, ``precision`` ("auto" = bf16 on CUDA), ``channels_last``,
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
              labelled samples of the smallest): ``class_weight="balanced"`` weights each
              sample's loss by ``n / (K * n_class)`` (any classification loss; a list with one
              weight per class, or a dict by class name, gives your own), ``sampler="balanced"``
              draws every class equally often, with replacement (in memory and from files).
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
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"unknown fit() options {unknown}; known options: {sorted(_OPTIONS)}.")
    if isinstance(backbone, nn.Module) and model is None:
        model_arg: Any = backbone
        name = getattr(backbone, "name", "custom")
    else:
        model_arg = model
        net = model.model if isinstance(model, Run) else model  # a finished run to adapt further
        name = net.backbone.name if net is not None else backbone
    if not isinstance(name, str):
        raise ConfigError(f"backbone must be a name or an nn.Module, got {type(name).__name__}.")
    transform = options.pop("augment", None) if callable(options.get("augment")) else None
    if transform is not None:
        options["augment"] = "custom"  # the pipeline itself is passed to the trainer
    config = FitConfig(backbone=name, epochs=epochs, **options)
    if config.source_free and model_arg is None:
        raise ConfigError(
            "source_free=True adapts a trained model to unlabelled target data: pass "
            "model=<an earlier Run or TransferModel>; without one it would train a random network."
        )
    if isinstance(data, str):
        data = load_dataset(data, seed=config.seed)
    trainer = Trainer(data, config, model=model_arg, observers=observers, train_transform=transform)
    return trainer.fit(resume=resume)


def fit_two_stage(
    source: DomainPair | Domain | str,
    target: DomainPair | Domain | str,
    backbone: str | nn.Module = "efficientnet_lite0",
    *,
    source_epochs: int = 5,
    target_epochs: int = 5,
    source_options: dict[str, Any] | None = None,
    **options: Any,
) -> Run:
    """Pretrain on a labelled source task, then fine-tune on a labelled target task.

    The two tasks may differ in kind (regression -> classification) and in label set: stage 2
    keeps the stage-1 backbone and puts a fresh head on it. ``source_options`` override
    ``options`` for stage 1 only. The returned run is stage 2's; ``run.pretrain_run`` is stage 1's.
    """
    first = fit(source, backbone, epochs=source_epochs, **{**options, **(source_options or {})})
    target_task = target if not isinstance(target, str) else None
    if target_task is None:
        target_task = load_dataset(target, seed=first.config.seed)
    pair = target_task if isinstance(target_task, DomainPair) else DomainPair(source=target_task)
    stage1 = first.model.backbone
    head = make_head(pair.task, stage1.num_features, pair.num_classes, options.get("dropout", 0.0))
    backbone = copy.deepcopy(stage1)
    backbone.pretrained = True  # on the source now: mode="auto" fine-tunes it in stage 2
    model = TransferModel(backbone, head, pair.task)
    second = fit(pair, model=model, epochs=target_epochs, **options)
    second.pretrain_run = first
    return second


__all__ = ["fit", "fit_two_stage", "load"]
