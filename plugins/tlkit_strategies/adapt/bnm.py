r"""BNM: batch nuclear-norm maximisation of the target predictions.

Cui, Wang, Zhuo, Li, Huang & Tian, "Towards Discriminability and Diversity: Batch Nuclear-norm
Maximization under Label Insufficient Situations", CVPR 2020.

The target batch's prediction matrix :math:`A \in \mathbb{R}^{B \times K}`,
:math:`A_{i\cdot} = \mathrm{softmax}(z_i)`, is confident (*discriminable*) when its Frobenius
norm is large and predicts many classes (*diverse*) when its rank is large. The nuclear norm
:math:`\lVert A \rVert_\star = \sum_j \sigma_j(A)` (the sum of its singular values) bounds both:
:math:`\lVert A \rVert_F \le \lVert A \rVert_\star \le \sqrt{\min(B, K)}\, \lVert A \rVert_F`.
BNM maximises it:

.. math::
    \mathcal{L}_{bnm} = -\frac{1}{B} \lVert A \rVert_\star .

Entropy minimisation only rewards confidence, and on a batch dominated by a few classes it pushes
the rare classes' samples into the frequent ones; the nuclear norm also rewards predicting many
classes, so the target does not collapse to one class. With rows on the simplex the nuclear
norm lies between :math:`\sqrt{B / K}` (every row uniform, :math:`\lVert A u \rVert` for
:math:`u = \mathbf{1} / \sqrt{K}` bounds it below; the rank-one :math:`\tfrac1K \mathbf{1}\mathbf{1}^\top` attains it) and
:math:`\sqrt{B \min(B, K)}` (one-hot rows spread evenly over :math:`\min(B, K)` classes), so
:math:`\mathcal{L}_{bnm} \in [-\sqrt{\min(B, K) / B},\, -1 / \sqrt{B K}]`. The paper's
trade-off is 1.

**Without source data** (``source_free``): BNM reads only the target logits, so it also adapts a
trained source model with unlabelled target data alone; ``step.logits`` with 0 rows is ignored.

Shapes: target logits ``(B, K)`` -> probabilities ``(B, K)`` -> scalar in
``[-sqrt(min(B, K) / B), -1 / sqrt(B K)]``. Logged: ``bnm`` (the weighted loss, negative).
"""

from __future__ import annotations

import torch

import tlkit
from tlkit import options


def bnm_loss(logits: torch.Tensor) -> torch.Tensor:
    """:math:`-\\lVert \\mathrm{softmax}(Z) \\rVert_\\star / B` for target ``logits`` ``(B, K)``.

    Computed in float32 from the singular values (``torch.linalg.svdvals``); its gradient is
    :math:`-U V^\\top / B` through the softmax, well defined for distinct singular values.
    """
    probs = logits.float().softmax(1)
    return -torch.linalg.svdvals(probs).sum() / len(probs)


class BNM:
    """Batch nuclear-norm maximisation (Cui et al. 2020): confident and diverse target predictions.

    Args:
        trade_off: weight of the BNM term (> 0); the paper uses 1.
    """

    name = "bnm"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch
    requires_task = "classification"  # a matrix of class probabilities
    source_free = True  # reads the target predictions only

    def __init__(self, trade_off: float = 1.0) -> None:
        self.trade_off = options.positive("trade_off", trade_off)

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        return {"bnm": self.trade_off * bnm_loss(step.target_logits)}
