r"""L2-SP: keep fine-tuned weights close to their pretrained starting point.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018. Plain weight decay pulls every weight towards 0, which forgets what
pretraining learnt; L2-SP pulls the backbone's weights :math:`w_S` towards their starting values
:math:`w_S^0` instead, and only the new head :math:`w_{\bar S}` towards 0:

.. math::
    \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
              + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2 .

The paper uses :math:`\alpha = 0.1, \beta = 0.01` (the defaults). Only parameters that currently
require gradients count, so a frozen backbone (the first ``freeze_epochs`` of ``fine_tune``)
contributes nothing. As in the paper, L2-SP *replaces* weight decay: the class attribute
``replaces_weight_decay = True`` tells the engine to drop AdamW's decay on the backbone and the
head (a domain discriminator or other strategy module keeps it).

The starting point is the backbone as :func:`tlkit_setup` finds it: pretrained weights, or the
seeded random init of a network trained from scratch (then it is the same on resume).

Shapes: the term is a scalar; the snapshot holds one copy of the backbone's parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import tlkit
from tlkit import options

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from tlkit import Step, Trainer


class L2SP:
    """L2-SP: pull backbone weights towards their starting values (Li et al., ICML 2018)."""

    name = "l2sp"
    family = "regularizer"
    replaces_weight_decay = True

    def __init__(self, alpha: float = 0.1, beta: float = 0.01) -> None:
        self.alpha = options.non_negative("alpha", alpha)
        self.beta = options.non_negative("beta", beta)
        self.start: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict:
        """Nothing to checkpoint: ``start`` is re-read in ``tlkit_setup``, which runs before a
        resumed run restores its weights, so it is the pretrained starting point again."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @tlkit.hookimpl
    def tlkit_setup(self, trainer: Trainer) -> None:
        self.start = {
            name: p.detach().clone() for name, p in trainer.model.backbone.named_parameters()
        }
        return None

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step: Step) -> dict[str, torch.Tensor] | None:
        if not (self.alpha or self.beta):
            return None  # both weights 0: no penalty (a constant term would train nothing)
        model = step.model
        device = next(model.head.parameters()).device
        to_start = torch.zeros((), device=device)
        if self.alpha:
            for name, p in model.backbone.named_parameters():
                if p.requires_grad:
                    to_start = to_start + (p.float() - self.start[name].float()).pow(2).sum()
        to_zero = torch.zeros((), device=device)
        if self.beta:
            for p in model.head.parameters():
                if p.requires_grad:
                    to_zero = to_zero + p.float().pow(2).sum()
        return {"l2sp": 0.5 * self.alpha * to_start + 0.5 * self.beta * to_zero}
