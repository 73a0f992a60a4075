r"""AdaBN: adaptive batch normalisation, re-estimating BatchNorm statistics on the target domain.

Li, Wang, Shi, Shi & Hou, "Revisiting Batch Normalization For Practical Domain Adaptation",
ICLR 2017 Workshop (arXiv:1603.04779, 2016).

Training is plain source training (AdaBN adds no loss and does not put target images in the
training batch). Before each evaluation every BatchNorm layer's running statistics are replaced by
the target domain's: for each channel :math:`c` of each layer,

.. math::
    \mu_c = \mathbb{E}_{x \sim \mathcal{T}}[h_c(x)], \qquad
    \sigma_c^2 = \mathrm{Var}_{x \sim \mathcal{T}}[h_c(x)],

estimated on the target training images (a cumulative average over batches, ``momentum=None``,
in ``eval`` mode except for the BatchNorm layers). The affine weights :math:`\gamma, \beta` are
untouched.

Behaviour, precisely:

* The model keeps the target statistics after each evaluation, so the history's
  ``target_accuracy``, ``run.model``, ``run.evaluate(...)`` and every checkpoint are the
  target-adapted model. ``source_accuracy`` is therefore measured **with target statistics**
  too (it is the adapted model on source test images, usually a little lower than source-only).
* With a trainable backbone, BatchNorm normalises training batches with their own statistics and
  only *updates* its running averages, so training is exactly source-only training; the next
  evaluation re-estimates the target statistics from scratch.
* With BatchNorm frozen during training (``freeze_bn=True``, ``mode="feature_extraction"``, the
  frozen epochs of ``mode="fine_tune"``), training uses the running statistics: after the first
  evaluation they are the target's, so later frozen epochs train the head on source images
  normalised with target statistics. Use AdaBN with a trainable backbone, or with one epoch.
* With EMA (``ema=``), the averaged model (the one evaluated) is adapted too.
* AdaBN sets ``needs_images = True``: evaluating from a feature cache would skip the backbone and
  with it the new statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

import tlkit
from tlkit import options
from tlkit.strategy_tools import batchnorm_layers


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    images: torch.Tensor | Iterable[tuple[torch.Tensor, Any]],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
) -> None:
    """Replace the running statistics of every BatchNorm layer of ``model`` with those of
    ``images`` ``(N, C, H, W)`` (uint8 or float in [0, 1]) -- or of ``(inputs, indices)``
    batches, such as ``trainer.target_batches()`` -- in place, from at most ``max_samples``.

    The statistics are a cumulative average over batches of ``batch_size``; the model's
    ``training`` flags and the layers' ``momentum`` are restored afterwards.
    """
    if isinstance(images, torch.Tensor):
        images = images[:max_samples] if max_samples is not None else images
        batches: Iterable = (
            (images[s : s + batch_size], None) for s in range(0, len(images), batch_size)
        )
    else:
        batches = images
    layers = batchnorm_layers(model)
    if not layers:
        return
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: the plain mean over batches
            m.train()
        seen = 0
        for batch, _ in batches:
            if max_samples is not None and seen >= max_samples:
                break
            if max_samples is not None:
                batch = batch[: max_samples - seen]
            batch = batch.to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float().div_(255)
            if len(batch) > 1:  # BatchNorm cannot take a batch of one in training mode
                model(batch)
            seen += len(batch)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)


class AdaBN:
    """AdaBN (Li et al. 2016): BatchNorm statistics re-estimated on target data before evaluation.

    Args:
        max_samples: use at most this many target training images (the first ones) to estimate
            the statistics; ``None`` uses them all.
    """

    name = "adabn"
    family = "adapt"
    needs_images = True

    def __init__(self, max_samples: int | None = None) -> None:
        self.max_samples = options.optional(options.integer, "max_samples", max_samples, minimum=2)

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> None:
        if not batchnorm_layers(trainer.model):
            raise ValueError(
                f"adabn re-estimates BatchNorm statistics, but the model "
                f"({trainer.model.backbone.name}) has no BatchNorm layer"
            )

    @tlkit.hookimpl
    def tlkit_before_evaluate(self, trainer) -> None:
        models = [trainer.model]
        if trainer.ema is not None:
            models.append(trainer.ema.module)
        for model in models:  # file-backed targets are decoded by the run's DataLoader
            adapt_batchnorm(
                model,
                trainer.target_batches(),
                device=trainer.device,
                max_samples=self.max_samples,
            )
