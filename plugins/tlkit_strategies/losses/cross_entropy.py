r"""Cross-entropy: the default supervised loss for classification.

.. math::
    \ell(x, y) = -\log \operatorname{softmax}(f(x))_y

Shapes: logits ``(B, K)``, targets ``(B,)`` int64 -> per-sample losses ``(B,)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options


class CrossEntropy:
    """Cross-entropy on the labelled samples (the baseline every robust loss is compared to)."""

    name = "cross_entropy"
    family = "loss"
    requires_task = "classification"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = options.fraction(
            "label_smoothing", label_smoothing, closed_top=False
        )

    @tlkit.hookimpl(trylast=True)
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), targets, reduction="none", label_smoothing=self.label_smoothing
        )
