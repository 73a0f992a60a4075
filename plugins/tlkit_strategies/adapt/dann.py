r"""DANN: domain-adversarial training through a gradient reversal layer.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky, "Domain-Adversarial
Training of Neural Networks", JMLR 17(59), 2016.

A domain discriminator :math:`D` learns to tell source features from target features; the
gradient reversal layer :math:`R_\lambda` (see :mod:`._grl`) makes the feature extractor
:math:`F` learn to fool it, so the features become domain-invariant while the head still
classifies the source:

.. math::
    \mathcal{L}_{dann} = w \cdot \Big[
        \tfrac{1}{B_s}\textstyle\sum_i \mathrm{BCE}\big(D(R_\lambda(F(x^s_i))), 1\big)
      + \tfrac{1}{B_t}\textstyle\sum_j \mathrm{BCE}\big(D(R_\lambda(F(x^t_j))), 0\big) \Big] / 2,
    \qquad \lambda(p) = \frac{2}{1 + e^{-10 p}} - 1

i.e. the mean BCE over the concatenated source and target batch (the engine draws both batches
at the same size). ``w`` is ``trade_off``; ``p`` is the training progress ``step.progress``.

Shapes: features ``(B_s, D)`` and ``(B_t, D)`` -> discriminator logits ``(B_s + B_t,)`` -> scalar.
Logged: ``dann`` (the weighted loss) and ``domain_accuracy`` (of the discriminator; 0.5 means the
domains are indistinguishable, 1.0 that they are not aligned at all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options
from tlkit_strategies.adapt._grl import (
    DomainDiscriminator,
    binary_accuracy,
    domain_labels,
    grad_reverse,
    grl_coefficient,
)


def domain_adversarial_loss(
    discriminator: torch.nn.Module,
    source: torch.Tensor,
    target: torch.Tensor,
    coeff: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean BCE of the discriminator, its accuracy)`` on reversed source/target features.

    ``source`` ``(B_s, D)``, ``target`` ``(B_t, D)``; the gradient reaching the features is
    ``-coeff`` times the discriminator's.
    """
    features = grad_reverse(torch.cat([source, target]).float(), coeff)
    logits = discriminator(features)
    labels = domain_labels(len(source), len(target), logits.device)
    return F.binary_cross_entropy_with_logits(logits, labels), binary_accuracy(logits, labels)


class DANN:
    """Domain-adversarial training (Ganin et al. 2016): a gradient-reversed domain discriminator.

    Args:
        trade_off: weight ``w`` of the domain loss (> 0).
        hidden_size: width of the discriminator's two hidden layers.
        alpha: steepness of the gradient-reversal warm-up ``2 / (1 + exp(-alpha p)) - 1``;
            ``0`` turns the warm-up off (``lambda = 1`` throughout).
        batch_norm: BatchNorm in the discriminator's hidden layers.

    Defaults: a discriminator without BatchNorm, as in the paper, of width 256. On small_cnn's
    128 features in the digit benchmark (``benchmarks/domain_adaptation.py``), wider (1024, as in
    TLlib) or BatchNorm discriminators won the game outright (domain accuracy stuck at 1.0,
    target accuracy no better than source-only), while widths 64-256 without BatchNorm adapted.
    """

    name = "dann"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch
    domain_bn = "separate"  # domain_bn="auto": BatchNorm sees each domain apart (measured best)

    def __init__(
        self,
        trade_off: float = 1.0,
        hidden_size: int = 256,
        alpha: float = 10.0,
        batch_norm: bool = False,
    ) -> None:
        self.trade_off = options.positive("trade_off", trade_off)
        self.hidden_size = options.integer("hidden_size", hidden_size, minimum=1)
        self.alpha = options.non_negative("alpha", alpha)
        self.batch_norm = options.boolean("batch_norm", batch_norm)
        self.discriminator: DomainDiscriminator | None = None

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> DomainDiscriminator:
        self.discriminator = DomainDiscriminator(
            trainer.model.backbone.num_features, self.hidden_size, self.batch_norm
        )
        return self.discriminator

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        coeff = grl_coefficient(step.progress, self.alpha)
        loss, accuracy = domain_adversarial_loss(
            self.discriminator, step.features, step.target_features, coeff
        )
        step.log("domain_accuracy", accuracy)
        return {"dann": self.trade_off * loss}
