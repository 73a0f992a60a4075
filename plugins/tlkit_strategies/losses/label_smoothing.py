r"""Label smoothing: cross-entropy against a target mixed with the uniform distribution.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016 (section 7). With smoothing :math:`\varepsilon` and :math:`K` classes the
target is :math:`\tilde t = (1 - \varepsilon)\, t + \varepsilon / K`, so

.. math::
    \ell(x, y) = -\sum_{k=1}^{K} \tilde t_k \log p_k
               = (1 - \varepsilon)\,(-\log p_y) + \frac{\varepsilon}{K} \sum_{k=1}^{K} -\log p_k,
    \qquad p = \operatorname{softmax}(f(x)).

It keeps the network from becoming over-confident, which also dampens (without removing) the
pull of wrong labels. Identical to ``F.cross_entropy(..., label_smoothing=eps)``.

Shapes: logits ``(B, K)``; targets ``(B,)`` int64 class ids or ``(B, K)`` class probabilities
-> per-sample losses ``(B,)`` float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options


class LabelSmoothing:
    """Cross-entropy with label smoothing (Szegedy et al., CVPR 2016); smoothing=0.1."""

    name = "label_smoothing"
    family = "loss"
    requires_task = "classification"

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = options.fraction("smoothing", smoothing, closed_top=False)

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():  # class probabilities (B, K)
            targets = targets.float()
        return F.cross_entropy(
            logits.float(), targets, reduction="none", label_smoothing=self.smoothing
        )
