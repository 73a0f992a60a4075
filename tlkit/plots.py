"""Matplotlib figures for runs: learning curves, confusion matrices, strategy comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch


def plot_history(
    history: Sequence[dict[str, Any]], *, metrics: list[str] | None = None, title: str = ""
):
    """Two panels: training loss terms (left) and held-out metrics (right) against epochs."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] for row in history]
    keys = sorted({k for row in history for k in row})
    loss_keys = [k for k in keys if k == "train_loss" or k in ("supervised", "pseudo_label")]
    loss_keys += [
        k
        for k in keys
        if k not in loss_keys
        and k not in ("epoch", "step", "lr")
        and not k.startswith(("source_", "target_"))
        and not k.endswith(("rate", "accuracy"))
    ]
    metric_keys = metrics or [k for k in keys if k.startswith(("source_", "target_"))]
    for k in loss_keys:
        ax_loss.plot(epochs, [row.get(k) for row in history], marker="o", label=k)
    for k in metric_keys:
        ax_metric.plot(epochs, [row.get(k) for row in history], marker="o", label=k)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_metric.set(xlabel="epoch", title="held-out metrics")
    for ax in (ax_loss, ax_metric):
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: torch.Tensor, classes: Sequence[str] = (), *, normalize: bool = True, title: str = ""
):
    """Rows are true classes, columns predictions; normalised per row by default."""
    cm = cm.float()
    if normalize:
        cm = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    k = cm.shape[0]
    labels = list(classes) or [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), labels, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
