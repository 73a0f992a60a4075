"""Batched inference and evaluation shared by the trainer and :class:`tlkit.Run`."""

from __future__ import annotations

import torch
from torch import nn

from tlkit.datasets.domain import Domain
from tlkit.engine.device import autocast_for
from tlkit.engine.metrics import classification_metrics, regression_metrics


def training_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Each sub-module's train/eval flag, so evaluation can restore them exactly (a plain
    ``model.train()`` would undo BatchNorm layers the trainer keeps frozen in eval mode)."""
    return [(m, m.training) for m in model.modules()]


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode: running statistics are used and
    kept (a frozen backbone, ``freeze_bn=True``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def restore_training_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def predict_outputs(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Model outputs for uint8 or [0, 1] images ``(N, C, H, W)``, in batches, on CPU as float32."""
    return predict(model, images, batch_size=batch_size, device=device, precision=precision)[1]


def predict_features(
    model: nn.Module,
    images: torch.Tensor,
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
    )[0]


@torch.no_grad()
def predict(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    from_features: bool = False,
    outputs: bool = True,
    to_cpu: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(features, outputs)`` of a :class:`~tlkit.backbones.TransferModel` over ``inputs`` in
    batches, in eval mode; every sub-module's train/eval flag is restored afterwards.

    ``inputs`` are images (uint8 or [0, 1]), or backbone features when ``from_features`` (then only
    the head runs). ``outputs=False`` skips the head (and returns ``None`` for the outputs). The
    one batched-inference loop of tlkit: the trainer's evaluation, the feature cache,
    :class:`tlkit.Run` predictions and observers all use it.
    """
    if device is not None:
        model.to(device)  # evaluate where asked: the model moves with the data
    device = next(model.parameters()).device
    modes = training_modes(model)
    model.eval()
    feats, outs = [], []
    try:
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size].to(device, non_blocking=True)
            with autocast_for(device, precision):
                if not hasattr(model, "head"):  # any nn.Module: outputs only
                    out = model(batch).float()
                    outs.append(out.cpu() if to_cpu else out)
                    continue
                f = batch if from_features else model.features(batch)
                feats.append(f.float().cpu() if to_cpu else f.float())
                if outputs:
                    out = model.head(f).float()
                    outs.append(out.cpu() if to_cpu else out)
    finally:
        restore_training_modes(modes)
    empty = torch.empty(0)
    return (torch.cat(feats) if feats else empty), (torch.cat(outs) if outs else None)


def metrics_from_outputs(outputs: torch.Tensor, domain: Domain, num_classes: int) -> dict:
    """Metrics against the domain's clean labels (the truth, also under label noise)."""
    if domain.task == "regression":
        return regression_metrics(outputs, domain.clean_labels)
    return classification_metrics(outputs, domain.clean_labels, num_classes)


def evaluate_model(
    model: nn.Module,
    domain: Domain,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> dict:
    """accuracy / per-class accuracy / confusion matrix (or MAE / RMSE) of ``model`` on ``domain``."""
    outputs = predict_outputs(
        model, domain.images, batch_size=batch_size, device=device, precision=precision
    )
    num_classes = getattr(model, "out_features", None) or domain.num_classes
    return metrics_from_outputs(outputs, domain, num_classes)
