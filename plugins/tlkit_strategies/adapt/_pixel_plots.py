"""A grid of source images and their target-style versions (PixelDA's generator, FDA's swap).

Used by the book and the dashboard::

    from tlkit_strategies.adapt.pixelda import source_to_target_grid

    trainer = tlkit.Trainer(task, adapt="pixelda", **options)
    run = trainer.fit()
    fig = source_to_target_grid(trainer, task.source, task.target)

``transform`` may be a :class:`tlkit.Trainer` that trained ``pixelda`` or ``fda``, the strategy
object itself (``trainer.strategies["pixelda"]``), a PixelDA generator module, or any function
``images (B, C, H, W) float in [0, 1] -> images of the same shape``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["source_to_target_grid"]


def _images(data: Any) -> torch.Tensor:
    """Float images in [0, 1] ``(N, C, H, W)`` from a Domain, a uint8 or a float tensor."""
    images = getattr(data, "images", data)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            f"expected images (N, C, H, W) or an in-memory image Domain, got {type(data).__name__}"
        )
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def _resolve(transform: Any) -> Any:
    """The strategy (or callable) that renders source images in the target's style."""
    strategies = getattr(transform, "strategies", None)
    if isinstance(strategies, dict):  # a Trainer
        for name in ("pixelda", "fda"):
            if name in strategies:
                return strategies[name]
        found = [s for s in strategies.values() if hasattr(s, "tlkit_transform_source")]
        if not found:
            raise ValueError(
                f"this trainer ran {sorted(strategies)}; none transforms source images "
                "(train with adapt='pixelda' or 'fda')"
            )
        return found[0]
    return transform


def _render(
    transform: Any, source: torch.Tensor, target: torch.Tensor | None, g: torch.Generator
) -> torch.Tensor:
    t = _resolve(transform)
    if hasattr(t, "generate") and getattr(t, "modules", None) is not None:  # PixelDA
        module = t.modules.generator
        device = next(module.parameters()).device
        was = module.training
        module.eval()
        try:
            return t.generate(source.to(device), g).cpu()
        finally:
            module.train(was)
    if hasattr(t, "beta") and hasattr(t, "tlkit_transform_source"):  # FDA
        from tlkit_strategies.adapt.fda import fourier_transfer, match_target

        if target is None:
            raise ValueError("FDA takes its amplitude from target images: pass target=")
        target = match_target(target, source)
        pick = torch.randint(0, len(target), (len(source),), generator=g)
        return fourier_transfer(source, target[pick], t.beta)
    if isinstance(t, torch.nn.Module):
        device = next(t.parameters()).device
        was = t.training
        t.eval()
        try:
            return t(source.to(device)).cpu()
        finally:
            t.train(was)
    if callable(t):
        return t(source)
    raise ValueError(
        "transform must be a Trainer that ran pixelda/fda, such a strategy, a generator module "
        f"or a function of images; got {type(transform).__name__}"
    )


@torch.no_grad()
def source_to_target_grid(
    transform: Any | Callable[[torch.Tensor], torch.Tensor],
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
        transform: a :class:`tlkit.Trainer` that trained ``pixelda`` or ``fda``, the strategy
            object, a generator module, or a function ``(B, C, H, W) -> (B, C, H, W)`` on float
            images in [0, 1].
        source: source images ``(N, C, H, W)`` (uint8, or float in [0, 1]) or an image Domain.
        target: target images or Domain (FDA's amplitude donors; a reference row).
        n: how many columns (the first ``n`` of a random order drawn from ``seed``).
        seed: picks the images, the noise of PixelDA and FDA's target partners.
        title: the figure's title.
    """
    import matplotlib.pyplot as plt  # here: loading the strategy must not import pyplot

    g = torch.Generator().manual_seed(seed)
    src = _images(source)
    pick = torch.randperm(len(src), generator=g)[: min(n, len(src))]
    src = src[pick]
    tgt = None
    if target is not None:
        tgt = _images(target)
        tgt = tgt[torch.randperm(len(tgt), generator=g)[: len(src)]]
    fake = _render(transform, src, tgt, g).float().clamp(0, 1)
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
