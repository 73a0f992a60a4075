r"""Focal loss: cross-entropy that down-weights the examples a model already gets right.

Tsung-Yi Lin, Priya Goyal, Ross Girshick, Kaiming He and Piotr Dollar, "Focal Loss for Dense
Object Detection", ICCV 2017.

With :math:`p_t = \operatorname{softmax}(f(x))_y`, the probability given to the true class,

.. math::
    \ell_{focal}(x, y) = -\,\alpha\,(1 - p_t)^{\gamma} \log p_t

:math:`\gamma` = ``gamma`` (2 in the paper) focuses training on hard, misclassified examples;
:math:`\gamma = 0`, :math:`\alpha = 1` is plain cross-entropy. (The paper's :math:`\alpha` is a
per-class weight for binary detection; here it is one scalar.)

Shapes: logits ``(B, K)``, targets ``(B,)`` int64 -> per-sample losses ``(B,)``.

This module is written as any third party would write it: it uses only ``tlkit.hookimpl`` and
``tlkit.options`` from tlkit, plus torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit


class FocalLoss:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma."""

    name = "focal"  # what users pass: tlkit.fit(..., loss="focal")
    family = "loss"  # which fit() argument selects it
    requires_task = "classification"  # every loss says which task it is for

    def __init__(self, gamma: float = 2.0, alpha: float = 1.0) -> None:
        # Options arrive from tlkit.fit(..., loss=("focal", {"gamma": 1.0})), YAML or --set:
        # tlkit.options checks them (and accepts "2.0" as 2.0), so a typo fails before training
        # starts, with a message that names the option.
        self.gamma = tlkit.options.non_negative("gamma", gamma)
        self.alpha = tlkit.options.positive("alpha", alpha)

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (B,)
        pt = log_pt.exp()
        return -self.alpha * (1.0 - pt).pow(self.gamma) * log_pt
