r"""CDAN: conditional domain adversarial training on the multilinear map of features and predictions.

Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

DANN aligns the feature distributions only; CDAN conditions the discriminator on the classifier's
predictions :math:`g = \mathrm{softmax}(G(f))` through the multilinear map (outer product)

.. math::
    T_\otimes(f, g) = f \otimes g = \mathrm{vec}(f g^\top) \in \mathbb{R}^{D K},

or, when :math:`D K` is large, its randomized approximation with fixed random matrices
:math:`R_f \in \mathbb{R}^{d \times D}`, :math:`R_g \in \mathbb{R}^{d \times K}` (entries
:math:`\mathcal{N}(0, 1)`):

.. math::
    T_\odot(f, g) = \tfrac{1}{\sqrt{d}} (R_f f) \odot (R_g g) \in \mathbb{R}^{d}.

With entropy conditioning (CDAN+E) easy-to-transfer samples (confident predictions) weigh more:

.. math::
    w_i = 1 + e^{-H(g_i)}, \qquad \mathcal{L}_{cdan} = \frac{\sum_i w_i \,
    \mathrm{BCE}\big(D(R_\lambda(T(f_i, g_i))), d_i\big)}{\sum_i w_i}

over the concatenated source and target batch (:math:`d_i` = 1 for source, 0 for target;
without entropy conditioning :math:`w_i = 1`). :math:`R_\lambda` is the gradient reversal layer
with DANN's warm-up schedule (see :mod:`._grl`). :math:`g` is detached, as in the authors'
code: the adversarial gradient reaches the network through :math:`f` only.

Shapes: features ``(B, D)``, logits ``(B, K)`` -> map ``(B, D*K)`` or ``(B, d)`` -> scalar.
Logged: ``cdan`` (weighted loss) and ``domain_accuracy``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import tlkit
from tlkit import options
from tlkit.strategy_tools import prediction_entropy
from tlkit_strategies.adapt._grl import (
    DomainDiscriminator,
    binary_accuracy,
    domain_labels,
    grad_reverse,
    grl_coefficient,
)


def multilinear_map(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """:math:`f \\otimes g` flattened: ``(B, D)``, ``(B, K)`` -> ``(B, D * K)``;
    ``out[b, d * K + k] = features[b, d] * probs[b, k]``."""
    return torch.bmm(features.unsqueeze(2), probs.unsqueeze(1)).flatten(1)


def entropy_weights(probs: torch.Tensor) -> torch.Tensor:
    """``1 + exp(-H(p_i))`` per row of ``probs`` ``(B, K)``, rescaled to sum to ``B``: ``(B,)``."""
    h = prediction_entropy(probs=probs)
    w = 1.0 + torch.exp(-h)
    return w / w.sum() * len(w)


class ConditionalDiscriminator(nn.Module):
    """The map ``T(f, g)`` followed by a :class:`DomainDiscriminator`.

    ``randomized=True`` uses :math:`T_\\odot` with fixed random matrices kept as buffers (so they
    are checkpointed with the discriminator and never trained).
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        *,
        randomized: bool,
        randomized_dim: int,
        hidden_size: int,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.randomized = randomized
        if randomized:
            self.register_buffer("rf", torch.randn(num_features, randomized_dim))
            self.register_buffer("rg", torch.randn(num_classes, randomized_dim))
            in_features = randomized_dim
        else:
            in_features = num_features * num_classes
        self.discriminator = DomainDiscriminator(in_features, hidden_size, batch_norm)

    def map(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (features @ self.rf) * (probs @ self.rg) / math.sqrt(self.rf.shape[1])
        return multilinear_map(features, probs)

    def forward(self, mapped: torch.Tensor) -> torch.Tensor:
        return self.discriminator(mapped)


def conditional_adversarial_loss(
    discriminator: ConditionalDiscriminator,
    source: tuple[torch.Tensor, torch.Tensor],
    target: tuple[torch.Tensor, torch.Tensor],
    coeff: float = 1.0,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, domain accuracy)`` from ``(features, logits)`` of the source and target batch."""
    features = torch.cat([source[0], target[0]]).float()
    probs = torch.cat([source[1], target[1]]).float().softmax(1).detach()
    mapped = grad_reverse(discriminator.map(features, probs), coeff)
    logits = discriminator(mapped)
    labels = domain_labels(len(source[0]), len(target[0]), logits.device)
    weight = entropy_weights(probs) if entropy else None
    loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weight)
    return loss, binary_accuracy(logits, labels)


class CDAN:
    """Conditional adversarial adaptation (Long et al. 2018): discriminator on features x predictions.

    Args:
        trade_off: weight of the domain loss (> 0).
        entropy: entropy conditioning (CDAN+E): weight samples by ``1 + exp(-H(g))``.
        randomized: ``"auto"`` uses the randomized map when ``D * K > max_dim``; ``True`` /
            ``False`` force it on / off.
        randomized_dim: output size ``d`` of the randomized map.
        max_dim: the ``D * K`` above which ``"auto"`` switches to the randomized map.
        hidden_size: width of the discriminator's hidden layers.
        alpha: steepness of the gradient-reversal warm-up (``0``: no warm-up).
        batch_norm: BatchNorm in the discriminator's hidden layers (off by default, as DANN's).
    """

    name = "cdan"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch
    domain_bn = "separate"  # domain_bn="auto": BatchNorm sees each domain apart (measured best)
    requires_task = "classification"  # conditions on class predictions

    def __init__(
        self,
        trade_off: float = 1.0,
        entropy: bool = True,
        randomized: bool | str = "auto",
        randomized_dim: int = 1024,
        max_dim: int = 4096,
        hidden_size: int = 256,
        alpha: float = 10.0,
        batch_norm: bool = False,
    ) -> None:
        self.trade_off = options.positive("trade_off", trade_off)
        self.entropy = options.boolean("entropy", entropy)
        self.randomized = (
            "auto" if randomized == "auto" else options.boolean("randomized", randomized)
        )
        self.randomized_dim = options.integer("randomized_dim", randomized_dim, minimum=1)
        self.max_dim = options.integer("max_dim", max_dim, minimum=1)
        self.hidden_size = options.integer("hidden_size", hidden_size, minimum=1)
        self.alpha = options.non_negative("alpha", alpha)
        self.batch_norm = options.boolean("batch_norm", batch_norm)
        self.discriminator: ConditionalDiscriminator | None = None

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> ConditionalDiscriminator:
        d, k = trainer.model.backbone.num_features, trainer.num_classes
        randomized = d * k > self.max_dim if self.randomized == "auto" else self.randomized
        self.discriminator = ConditionalDiscriminator(
            d,
            k,
            randomized=randomized,
            randomized_dim=self.randomized_dim,
            hidden_size=self.hidden_size,
            batch_norm=self.batch_norm,
        )
        return self.discriminator

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        coeff = grl_coefficient(step.progress, self.alpha)
        loss, accuracy = conditional_adversarial_loss(
            self.discriminator,
            (step.features, step.logits),
            (step.target_features, step.target_logits),
            coeff,
            entropy=self.entropy,
        )
        step.log("domain_accuracy", accuracy)
        return {"cdan": self.trade_off * loss}
