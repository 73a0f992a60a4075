r"""Cross-entropy: the default supervised loss for classification, with optional label smoothing.

.. math::
    \ell(x, y) = -\sum_{k=1}^{K} \tilde t_k \log p_k, \qquad p = \operatorname{softmax}(f(x)),
    \qquad \tilde t = (1 - \varepsilon)\, t + \varepsilon / K

where :math:`t` is the one-hot label (or a pseudo-labelling strategy's class probabilities) and
:math:`\varepsilon` is ``label_smoothing`` (Szegedy et al., "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016, section 7): 0 gives plain cross-entropy; a small
value such as 0.1 keeps the network from becoming over-confident, which also dampens (without
removing) the pull of wrong labels. Select it as ``loss=("cross_entropy", {"label_smoothing":
0.1})``, the option ``torch.nn.functional.cross_entropy`` has.

Shapes: logits ``(B, K)``, targets ``(B,)`` int64 or ``(B, K)`` probabilities -> per-sample
losses ``(B,)`` float32.
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
