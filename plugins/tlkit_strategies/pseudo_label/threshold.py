r"""Confidence-thresholded pseudo-labels (Lee, 2013).

Dong-Hyun Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks", ICML 2013 Workshop on Challenges in Representation Learning.

Each unlabelled sample takes the model's own most likely class as its label, and the supervised
loss :math:`\ell` (cross-entropy by default) is applied to it -- but only where the model is
confident enough. With :math:`p = \operatorname{softmax}(f(x_t))`, treated as a constant:

.. math::
    \hat y = \arg\max_k p_k, \qquad
    m = \mathbb{1}\left[\max_k p_k \ge \tau\right], \qquad
    \mathcal{L}_{pl} = \alpha(t) \, \frac{1}{B_t} \sum_{i=1}^{B_t} m_i \, \ell(f(x_{t,i}), \hat y_i)

:math:`\alpha(t)` rises linearly from 0 to ``weight`` over the first ``warmup`` fraction of
training (Lee's schedule, so that early, mostly wrong, labels do not dominate) and then stays at
``weight``. ``threshold=0`` is Lee's original method (every sample is pseudo-labelled);
the default 0.95 is the confidence mask later popularised by FixMatch.

Shapes: ``step.target_logits`` ``(B_t, K)`` -> targets ``(B_t,)`` int64, weights ``(B_t,)``.
The loss is applied to the same logits (with gradients) by the engine.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit import options


def confident_labels(
    logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(targets, mask, confidence)`` from logits ``(B, K)``: argmax class ``(B,)`` int64,
    ``1.0`` where the top softmax probability is at least ``threshold`` else ``0.0`` ``(B,)``,
    and that probability ``(B,)``. No gradient flows through any of them."""
    probs = logits.detach().float().softmax(dim=1)
    confidence, targets = probs.max(dim=1)
    mask = (confidence >= threshold).float()
    return targets, mask, confidence


def linear_warmup(progress: float, warmup: float) -> float:
    """``min(1, progress / warmup)`` (1 when ``warmup`` is 0)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, max(0.0, progress) / warmup)


class ConfidenceThreshold:
    """Pseudo-label (Lee 2013): train on the model's own confident predictions on target data."""

    name = "threshold"
    family = "pseudo_label"
    needs_target = True  # trains on the unlabelled target batch
    requires_task = "classification"  # class pseudo-labels

    def __init__(self, threshold: float = 0.95, weight: float = 1.0, warmup: float = 0.0) -> None:
        self.threshold = options.fraction("threshold", threshold)
        self.weight = options.non_negative("weight", weight)
        self.warmup = options.fraction("warmup (a fraction of training)", warmup, closed_top=False)

    @tlkit.hookimpl
    def tlkit_pseudo_labels(self, step) -> tlkit.PseudoLabels:
        targets, mask, _ = confident_labels(step.target_logits, self.threshold)
        alpha = self.weight * linear_warmup(step.progress, self.warmup)
        return tlkit.PseudoLabels(targets=targets, weights=mask * alpha)
