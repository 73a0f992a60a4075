"""Matplotlib figures for runs: learning curves, confusion matrices, strategy comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator


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
        # whole epochs, and one epoch is a point on a real axis (not one from 0.96 to 1.04)
        ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: torch.Tensor, classes: Sequence[str] = (), *, normalize: bool = True, title: str = ""
):
    """Rows are true classes, columns predictions; the cells show counts, the colours the
    share of each true class (``normalize=False``: colours by count), the title the accuracy."""
    counts = cm.long()
    shown = cm.float()
    if normalize:
        shown = shown / shown.sum(dim=1, keepdim=True).clamp(min=1)
    k = cm.shape[0]
    total = int(counts.sum())
    accuracy = float(counts.diagonal().sum()) / total if total else float("nan")
    labels = list(classes) or [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(0.5 * k + 2.2, 0.5 * k + 1.6))
    im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    if k <= 20:
        top = float(shown.max()) or 1.0
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    dark = float(shown[i, j]) > 0.6 * top
                    ax.text(
                        j,
                        i,
                        str(int(counts[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
    ax.set_xticks(range(k), labels, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), labels)
    heading = f"{title}: " if title else ""
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{heading}accuracy {accuracy:.1%} of {total}")
    fig.colorbar(
        im, ax=ax, fraction=0.046, label="share of the true class" if normalize else "count"
    )
    fig.tight_layout()
    return fig
