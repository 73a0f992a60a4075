r"""Shared pieces of the adversarial methods (DANN, CDAN): gradient reversal and the discriminator.

Gradient reversal layer (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015): the identity in the forward pass, the gradient multiplied by :math:`-\lambda` in the
backward pass, so that minimising the discriminator's loss *maximises* it w.r.t. the features.

.. math::
    R_\lambda(x) = x, \qquad \frac{\partial R_\lambda}{\partial x} = -\lambda I

The warm-start schedule of :math:`\lambda` over training progress :math:`p \in [0, 1]` (Ganin et
al., JMLR 2016, eq. 14) keeps the noisy early discriminator from disturbing the features:

.. math::
    \lambda(p) = \frac{2}{1 + \exp(-\alpha p)} - 1, \qquad \alpha = 10
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:  # noqa: D102
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """:math:`R_\\lambda(x)`: returns ``x`` unchanged; its gradient is multiplied by ``-coeff``."""
    return _GradientReverse.apply(x, float(coeff))


def grl_coefficient(progress: float, alpha: float = 10.0, max_value: float = 1.0) -> float:
    """The warm-start schedule ``max_value * (2 / (1 + exp(-alpha * p)) - 1)``: 0 at ``p = 0``,
    close to ``max_value`` by the end of training; ``alpha = 0`` turns the warm-up off
    (``max_value`` throughout)."""
    if alpha <= 0:
        return max_value
    p = min(max(float(progress), 0.0), 1.0)
    return max_value * (2.0 / (1.0 + math.exp(-alpha * p)) - 1.0)


class DomainDiscriminator(nn.Module):
    """MLP ``(B, in_features) -> (B,)`` domain logits (source = 1, target = 0): two hidden
    ``Linear -> [BatchNorm] -> ReLU`` layers, then a linear output (no sigmoid: the loss is
    ``binary_cross_entropy_with_logits``). The DANN paper uses no BatchNorm; TLlib does."""

    def __init__(self, in_features: int, hidden_size: int = 256, batch_norm: bool = False):
        super().__init__()

        def hidden(n_in: int) -> list[nn.Module]:
            norm = [nn.BatchNorm1d(hidden_size)] if batch_norm else []
            return [nn.Linear(n_in, hidden_size), *norm, nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *hidden(in_features), *hidden(hidden_size), nn.Linear(hidden_size, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def domain_labels(n_source: int, n_target: int, device: torch.device) -> torch.Tensor:
    """``(n_source + n_target,)`` float labels: 1 for source rows, 0 for target rows."""
    return torch.cat([torch.ones(n_source, device=device), torch.zeros(n_target, device=device)])


def binary_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of domain logits on the right side of 0 (a detached scalar)."""
    return ((logits.detach() > 0).float() == labels).float().mean()
