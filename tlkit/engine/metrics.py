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
    """MAE, RMSE and R^2 over all outputs, in the targets' units, beside the errors of
    predicting the mean (``baseline_mae`` / ``baseline_rmse``): a model that does not beat
    them has learned nothing from the inputs. The baseline is the mean of these very targets,
    the best constant in hindsight (R^2 = 1 - MSE / baseline MSE)."""
    preds = preds.float().view(len(preds), -1)
    targets = targets.float().view(len(targets), -1)
    if len(targets) == 0:
        nan = float("nan")
        return dict(mae=nan, rmse=nan, r2=nan, baseline_mae=nan, baseline_rmse=nan)
    err = preds - targets
    base = targets - targets.mean(dim=0)
    mse, base_mse = float(err.pow(2).mean()), float(base.pow(2).mean())
    return {
        "mae": float(err.abs().mean()),
        "rmse": mse**0.5,
        "r2": 1.0 - mse / base_mse if base_mse > 0 else float("nan"),
        "baseline_mae": float(base.abs().mean()),
        "baseline_rmse": base_mse**0.5,
    }
