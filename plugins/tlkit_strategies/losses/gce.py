r"""Generalized cross-entropy (GCE): a noise-robust loss between cross-entropy and MAE.

Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
Labels", NeurIPS 2018. The negative Box-Cox transform of the probability of the label:

.. math::
    \ell_q(x, y) = \frac{1 - p_y^{\,q}}{q}, \qquad p = \operatorname{softmax}(f(x)),
    \quad q \in (0, 1].

As :math:`q \to 0` it tends to cross-entropy :math:`-\log p_y`; at :math:`q = 1` it is the
mean absolute error :math:`1 - p_y` (up to a factor 2), which is robust to symmetric noise but
trains slowly. Its gradient is :math:`p_y^{\,q}` times that of cross-entropy, so samples the
network finds unlikely -- often the mislabelled ones -- weigh less. The paper's default is
:math:`q = 0.7` (its truncated variant, :math:`L_{trunc}`, is not implemented here).

For class-probability targets :math:`t` the loss is :math:`\sum_k t_k (1 - p_k^{\,q}) / q`.

Shapes: logits ``(B, K)``; targets ``(B,)`` int64 class ids or ``(B, K)`` class probabilities
-> per-sample losses ``(B,)`` float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options


class GeneralizedCrossEntropy:
    """Generalized cross-entropy, robust to label noise (Zhang & Sabuncu, NeurIPS 2018); q=0.7."""

    name = "gce"
    family = "loss"
    requires_task = "classification"

    def __init__(self, q: float = 0.7) -> None:
        self.q = options.number("q", q)
        if not 0 < self.q <= 1:
            raise ValueError(f"q must be in (0, 1] (q -> 0 is cross-entropy, 1 is MAE), got {q!r}")

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        if targets.is_floating_point():  # class probabilities (B, K)
            return (targets.float() * -torch.expm1(self.q * log_p)).sum(dim=1) / self.q
        log_py = log_p.gather(1, targets.long().view(-1, 1)).squeeze(1)  # (B,)
        # 1 - p_y^q = -expm1(q log p_y): accurate for small q, where the loss nears CE
        return -torch.expm1(self.q * log_py) / self.q
