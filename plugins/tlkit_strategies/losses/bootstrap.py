r"""Bootstrapping losses: cross-entropy against a mix of the given label and the prediction.

Reed, Lee, Anguelov, Szegedy, Erhan & Rabinovich, "Training Deep Neural Networks on Noisy
Labels with Bootstrapping", ICLR 2015 workshop. The network's own belief partly replaces the
label, so a confident prediction can overrule a wrong one:

.. math::
    \ell_\text{soft}(x, y) = -\sum_{k} \bigl(\beta\, t_k + (1 - \beta)\, p_k\bigr) \log p_k,
    \qquad
    \ell_\text{hard}(x, y) = -\sum_{k} \bigl(\beta\, t_k + (1 - \beta)\, z_k\bigr) \log p_k,

with :math:`p = \operatorname{softmax}(f(x))`, :math:`t` the one-hot label and :math:`z` the
one-hot of :math:`\arg\max_k p_k`. The paper's settings are :math:`\beta = 0.95` (soft) and
:math:`\beta = 0.8` (hard). Soft bootstrapping is cross-entropy plus :math:`(1 - \beta)` times
the prediction's entropy, i.e. minimum-entropy regularisation; as in the paper the gradient
flows through :math:`p` in the target too (the argmax :math:`z` has none). :math:`\beta = 1`
is plain cross-entropy.

Shapes: logits ``(B, K)``; targets ``(B,)`` int64 class ids or ``(B, K)`` class probabilities
-> per-sample losses ``(B,)`` float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options
from tlkit.strategy_tools import prediction_entropy


def _label_term(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the given label: ``(B, K)`` log-probabilities -> ``(B,)``."""
    if targets.is_floating_point():  # class probabilities (B, K)
        return -(targets.float() * log_p).sum(dim=1)
    return -log_p.gather(1, targets.long().view(-1, 1)).squeeze(1)


class SoftBootstrap:
    """Soft bootstrapping: CE on beta*label + (1-beta)*prediction (Reed et al.); beta=0.95."""

    name = "bootstrap_soft"
    family = "loss"
    requires_task = "classification"

    def __init__(self, beta: float = 0.95) -> None:
        self.beta = options.fraction("beta (the weight of the given label)", beta)

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        entropy = prediction_entropy(log_probs=log_p)  # (B,)
        return self.beta * _label_term(log_p, targets) + (1.0 - self.beta) * entropy


class HardBootstrap:
    """Hard bootstrapping: CE on beta*label + (1-beta)*argmax prediction (Reed et al.); beta=0.8."""

    name = "bootstrap_hard"
    family = "loss"
    requires_task = "classification"

    def __init__(self, beta: float = 0.8) -> None:
        self.beta = options.fraction("beta (the weight of the given label)", beta)

    @tlkit.hookimpl
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        predicted = log_p.detach().argmax(dim=1, keepdim=True)  # (B, 1)
        self_term = -log_p.gather(1, predicted).squeeze(1)  # (B,)
        return self.beta * _label_term(log_p, targets) + (1.0 - self.beta) * self_term
