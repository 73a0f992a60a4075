"""Matplotlib figures for runs: learning curves, confusion matrices, strategy comparisons, and
source images next to their target-style versions (:func:`source_to_target_grid`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from tlkit.hookspecs import SourcePreview


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


def _images(data: Any) -> torch.Tensor:
    """Float images in [0, 1] ``(N, C, H, W)`` from a Domain, a uint8 or a float tensor."""
    images = getattr(data, "images", data)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            f"expected images (N, C, H, W) or an in-memory image Domain, got {type(data).__name__}"
        )
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def _previewers(transform: Any) -> list[Any]:
    """What renders source images in the target's style: a trainer's previewing strategies (in
    the order the run applied them), a strategy, a module or a function."""
    strategies = getattr(transform, "strategies", None)
    if isinstance(strategies, Mapping):  # a Trainer: its strategies, composed as in training
        found = [s for s in strategies.values() if isinstance(s, SourcePreview)]
        if not found:
            raise ValueError(
                f"this run's strategies {sorted(strategies)} offer no preview of source images "
                "(a strategy that transforms them shows it with a preview() method: "
                "tlkit.hookspecs.SourcePreview; adapt='pixelda' and 'fda' have one)"
            )
        return found
    if isinstance(transform, SourcePreview) or callable(transform):
        return [transform]
    raise ValueError(
        "source_to_target_grid takes the tlkit.Trainer whose strategies transform source images "
        "(a Run keeps no strategies), such a strategy (with preview(): "
        "tlkit.hookspecs.SourcePreview), a generator module or a function of images; got "
        f"{type(transform).__name__}"
    )


def _render(
    transform: Any, source: torch.Tensor, target: torch.Tensor | None, g: torch.Generator
) -> torch.Tensor:
    images = source
    for t in _previewers(transform):
        if isinstance(t, SourcePreview):
            images = t.preview(images, target=target, generator=g)
        elif isinstance(t, torch.nn.Module):
            device = next(t.parameters()).device
            was = t.training
            t.eval()
            try:
                images = t(images.to(device)).cpu()
            finally:
                t.train(was)
        else:
            images = t(images)
    return images


@torch.no_grad()
def source_to_target_grid(
    run_or_strategy: Any | Callable[[torch.Tensor], torch.Tensor],
    source: Any,
    target: Any = None,
    *,
    n: int = 8,
    seed: int = 0,
    title: str | None = None,
):
    """Source images (top row), their target-style versions (middle) and, when ``target`` is
    given, real target images (bottom), ``n`` columns; returns a matplotlib Figure.

    Args:
        run_or_strategy: a :class:`tlkit.Trainer` whose strategies transform source images (each
            that offers ``preview()``, :class:`tlkit.hookspecs.SourcePreview`, applied in the
            run's order, as in training), such a strategy object (``tlkit_strategies.adapt.fda.FDA()``,
            ``trainer.strategies["pixelda"]``, a third party's), a generator module, or a function
            ``(B, C, H, W) -> (B, C, H, W)`` on float images in [0, 1].
        source: source images ``(N, C, H, W)`` (uint8, or float in [0, 1]) or an image Domain.
        target: target images or Domain (FDA's amplitude donors; a reference row).
        n: how many columns (the first ``n`` of a random order drawn from ``seed``).
        seed: picks the images, the noise of PixelDA and FDA's target partners.
        title: the figure's title.
    """
    g = torch.Generator().manual_seed(seed)
    src = _images(source)
    pick = torch.randperm(len(src), generator=g)[: min(n, len(src))]
    src = src[pick]
    tgt = None
    if target is not None:
        tgt = _images(target)
        tgt = tgt[torch.randperm(len(tgt), generator=g)[: len(src)]]
    fake = _render(run_or_strategy, src, tgt, g).float().clamp(0, 1)
    rows = [("source", src), ("target style", fake)]
    if tgt is not None:
        rows.append(("real target", tgt))
    cols = len(src)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.1 * cols + 0.6, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                img = imgs[c].numpy()
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.transpose(1, 2, 0))
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
