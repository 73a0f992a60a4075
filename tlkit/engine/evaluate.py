"""Batched inference and evaluation shared by the trainer and :class:`tlkit.Run`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from tlkit.datasets.domain import Domain
from tlkit.datasets.unreadable import unreadable_error
from tlkit.engine.device import autocast_for
from tlkit.engine.metrics import classification_metrics, regression_metrics
from tlkit.strategy_tools import batchnorm_layers


def training_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Each sub-module's train/eval flag, so evaluation can restore them exactly (a plain
    ``model.train()`` would undo BatchNorm layers the trainer keeps frozen in eval mode)."""
    return [(m, m.training) for m in model.modules()]


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode: running statistics are used and
    kept (a frozen backbone, ``freeze_bn=True``)."""
    for m in batchnorm_layers(module):
        m.eval()


def restore_training_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def predict_outputs(
    model: nn.Module,
    images: Any,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Model outputs for images ``(N, C, H, W)`` (uint8 or [0, 1]) or a :class:`Domain`, in
    batches, on CPU as float32."""
    return predict(model, images, batch_size=batch_size, device=device, precision=precision).outputs


def predict_features(
    model: nn.Module,
    images: Any,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    to_cpu: bool = True,
) -> torch.Tensor:
    """Backbone features ``(N, D)`` of a :class:`~tlkit.backbones.TransferModel` (the head's
    input), in eval mode -- BatchNorm uses its running statistics and does not update them.
    ``to_cpu=False`` leaves them on the model's device (the trainer's feature cache)."""
    return predict(
        model,
        images,
        batch_size=batch_size,
        device=device,
        precision=precision,
        outputs=False,
        to_cpu=to_cpu,
    ).features


class Predictions(NamedTuple):
    """What :func:`predict` returns: ``features`` ``(M, D)``, ``outputs`` ``(M, K)`` (or
    ``None``), and the ``indices`` ``(M,)`` of the samples they belong to (files that could not
    be read are left out, so ``M`` may be smaller than the number of samples)."""

    features: torch.Tensor
    outputs: torch.Tensor | None
    indices: torch.Tensor


@torch.no_grad()
def predict(
    model: nn.Module,
    inputs: Any,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    from_features: bool = False,
    outputs: bool = True,
    to_cpu: bool = True,
    image_size: int | None = None,
    num_workers: int = 0,
    resize: str = "crop",
    sink: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> Predictions:
    """``(features, outputs, indices)`` of a :class:`~tlkit.backbones.TransferModel` in eval mode;
    every sub-module's train/eval flag is restored afterwards. The one batched-inference loop of
    tlkit: the trainer's evaluation and feature cache, :class:`tlkit.Run` predictions and
    observers all use it.

    ``inputs`` is a tensor (images uint8 / [0, 1], or a tensor domain's rows; backbone features
    when ``from_features``, then only the head runs), a :class:`Domain` (file-backed ones are
    decoded in ``num_workers`` DataLoader workers with the evaluation transform at
    ``image_size``), or an iterable of ``(inputs, indices)`` batches. ``outputs=False`` skips the
    head. ``sink(features, indices)`` receives each batch's features instead of keeping them
    (the trainer writes large feature caches to disk that way); ``features`` is then empty.
    """
    if device is not None:
        model.to(device)  # evaluate where asked: the model moves with the data
    device = next(model.parameters()).device
    batches = batches_of(inputs, batch_size, image_size, num_workers, resize)
    modes = training_modes(model)
    model.eval()
    feats, outs, index = [], [], []
    try:
        for batch, idx in batches:
            if batch is None or len(idx) == 0:
                continue
            batch = batch.to(device, non_blocking=True)
            with autocast_for(device, precision):
                if not hasattr(model, "head"):  # any nn.Module: outputs only
                    out = model(batch).float()
                    outs.append(out.cpu() if to_cpu else out)
                    index.append(idx)
                    continue
                f = batch if from_features else model.features(batch)
                if outputs:
                    out = model.head(f).float()
                    outs.append(out.cpu() if to_cpu else out)
                f = f.float()
                if sink is not None:
                    sink(f, idx)
                else:
                    feats.append(f.cpu() if to_cpu else f)
            index.append(idx)
    finally:
        restore_training_modes(modes)
    empty = torch.empty(0)
    return Predictions(
        torch.cat(feats) if feats else empty,
        torch.cat(outs) if outs else None,
        torch.cat(index) if index else torch.empty(0, dtype=torch.long),
    )


def eval_transform(size: int, resize: str = "crop") -> Callable[[torch.Tensor], torch.Tensor]:
    """How file-backed images are brought to ``size`` for evaluation: ``"crop"`` (short side,
    then the centre square; photos) or ``"squash"`` (the whole image to the square; digits)."""
    from tlkit.datasets import transforms

    if resize == "squash":
        return transforms.squash_transform(size)
    return transforms.eval_transform(size)


def batches_of(
    inputs: Any,
    batch_size: int,
    image_size: int | None,
    num_workers: int,
    resize: str = "crop",
) -> Iterable[tuple[Any, torch.Tensor]]:
    """``(inputs, indices)`` batches of a tensor, a Domain or an iterable of batches."""
    if isinstance(inputs, Domain):
        if inputs.in_memory:
            inputs = inputs.inputs
        else:
            from tlkit.datasets.loader import collate

            size = image_size or inputs.image_size or 224
            dataset = inputs.dataset(eval_transform(size, resize))
            return torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                collate_fn=collate,
                num_workers=num_workers,
                generator=torch.Generator().manual_seed(0),  # leaves the global generator alone
            )
    if isinstance(inputs, torch.Tensor):
        n = len(inputs)
        return (
            (inputs[s : s + batch_size], torch.arange(s, min(n, s + batch_size)))
            for s in range(0, n, batch_size)
        )
    return inputs


def metrics_from_outputs(
    outputs: torch.Tensor, domain: Domain, num_classes: int, indices: torch.Tensor | None = None
) -> dict:
    """Metrics against the domain's clean labels (the truth, also under label noise), of the
    samples at ``indices`` (all of them by default)."""
    if outputs is None and len(domain):  # every file of the domain failed to decode
        raise unreadable_error(domain)
    truth = domain.clean_labels if indices is None else domain.clean_labels[indices]
    if domain.task == "regression":
        return regression_metrics(outputs, truth)
    return classification_metrics(outputs, truth, num_classes)


def evaluate_model(
    model: nn.Module,
    domain: Domain,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    image_size: int | None = None,
    num_workers: int = 0,
    resize: str = "crop",
) -> dict:
    """accuracy / per-class accuracy / confusion matrix (or MAE / RMSE) of ``model`` on ``domain``."""
    p = predict(
        model,
        domain,
        batch_size=batch_size,
        device=device,
        precision=precision,
        image_size=image_size,
        num_workers=num_workers,
        resize=resize,
    )
    num_classes = getattr(model, "out_features", None) or domain.num_classes
    return metrics_from_outputs(p.outputs, domain, num_classes, p.indices)
