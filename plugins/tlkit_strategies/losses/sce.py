r"""Symmetric cross-entropy (SCE): cross-entropy plus reverse cross-entropy.

Wang, Ma, Chen, Luo, Yi & Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy
Labels", ICCV 2019. Cross-entropy :math:`H(t, p)` learns fast but fits wrong labels; the
*reverse* cross-entropy :math:`H(p, t)` swaps prediction and label and is robust to noise. With
a one-hot label :math:`t`, :math:`\log 0` is replaced by a constant :math:`A < 0`:

.. math::
    \ell(x, y) = \alpha\, \underbrace{(-\log p_y)}_{\text{CE}}
        + \beta\, \underbrace{\Bigl(-\sum_{k} p_k \log t_k\Bigr)}_{\text{RCE}}
        = \alpha\,(-\log p_y) + \beta\,(-A)\,(1 - p_y),
    \qquad p = \operatorname{softmax}(f(x)).

The RCE term is a scaled MAE. The paper uses :math:`A = -4`, and :math:`\alpha = 0.1,
\beta = 1` on CIFAR-10 (the defaults here). For class-probability targets :math:`t`,
:math:`\log t_k` is clamped below at :math:`A`.

Shapes: logits ``(B, K)``; targets ``(B,)`` int64 class ids or ``(B, K)`` class probabilities
-> per-sample losses ``(B,)`` float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options


class SymmetricCrossEntropy:
    """Symmetric cross-entropy, alpha*CE + beta*reverse CE (Wang et al., ICCV 2019); A=-4."""

    name = "sce"
    family = "loss"
    requires_task = "classification"

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0) -> None:
        self.alpha, self.beta = options.number("alpha", alpha), options.number("beta", beta)
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise ValueError(
                f"alpha and beta must be >= 0 and not both 0, got alpha={alpha!r}, beta={beta!r}"
            )
        self.A = options.number("A", A)
        if self.A >= 0:
            raise ValueError(f"A stands in for log(0) and must be negative, got A={A!r}")

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        if targets.is_floating_point():  # class probabilities (B, K)
            t = targets.float()
            ce = -(t * log_p).sum(dim=1)
            rce = -(log_p.exp() * t.clamp_min(1e-30).log().clamp_min(self.A)).sum(dim=1)
        else:
            log_py = log_p.gather(1, targets.long().view(-1, 1)).squeeze(1)  # (B,)
            ce = -log_py
            rce = -self.A * (1.0 - log_py.exp())
        return self.alpha * ce + self.beta * rce
