"""Evaluation metrics computed from predictions gathered over a whole test set."""

from __future__ import annotations

import torch


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts; row = true class, column = predicted class."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """accuracy, per-class accuracy (NaN for classes absent from ``targets``), confusion matrix."""
    preds = logits.argmax(dim=1)
    cm = confusion_matrix(preds, targets, num_classes)
    support = cm.sum(dim=1)
    per_class = cm.diag().float() / support.clamp(min=1)
    per_class[support == 0] = float("nan")
    return {
        "accuracy": float((preds == targets).float().mean()) if len(targets) else float("nan"),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": cm,
    }


def regression_metrics(preds: torch.Tensor, targets: torch.Tensor) -> dict:
    """mean absolute error and root mean squared error over all outputs."""
    preds = preds.float().view(len(preds), -1)
    targets = targets.float().view(len(targets), -1)
    err = preds - targets
    return {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt())}
