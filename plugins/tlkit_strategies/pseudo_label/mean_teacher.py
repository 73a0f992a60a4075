r"""Mean Teacher: a student matches the predictions of its own weight average.

Antti Tarvainen and Harri Valpola, "Mean teachers are better role models: Weight-averaged
consistency targets improve semi-supervised deep learning results", NeurIPS 2017.

The teacher :math:`\theta'` is an exponential moving average of the student :math:`\theta`,
updated after every optimiser step with a decay that starts small so that the first steps are
not dominated by the random initialisation:

.. math::
    \theta'_s = d_s \, \theta'_{s-1} + (1 - d_s) \, \theta_s, \qquad
    d_s = \min\left(1 - \frac{1}{s + 1},\; d\right)

(step :math:`s` counting from 1, :math:`d` = ``decay``). On two independently augmented views
:math:`\eta, \eta'` of each unlabelled image the student's class probabilities are pulled towards
the teacher's, which get no gradient:

.. math::
    \mathcal{L}_c = w(t) \, \frac{1}{B_t} \sum_{i=1}^{B_t}
        \left\lVert \operatorname{softmax}(f_\theta(\eta(u_i)))
        - \operatorname{softmax}(f_{\theta'}(\eta'(u_i))) \right\rVert_2^2,
    \qquad w(t) = \lambda \, e^{-5 (1 - \min(1, t / T))^2}

with the sigmoid-shaped ramp-up of Laine & Aila (2017) over the first :math:`T` = ``rampup``
fraction of training (:math:`t` = ``step.progress``) and :math:`\lambda` = ``weight``.

Shapes: ``step.x_target`` ``(B_t, C, H, W)`` -> student and teacher probabilities ``(B_t, K)`` ->
one scalar, logged as ``consistency``. The teacher's argmax accuracy on the target batch (when its
labels are known) is logged as ``pseudo_label_accuracy``, its agreement with the student as
``teacher_agreement``, and ``mask_rate`` is the fraction of samples with a non-zero weight (all of
them once :math:`w(t) > 0`).

The student's view gets its own forward pass, which, as in :mod:`.fixmatch`, leaves BatchNorm's
running statistics to the step's main pass over clean images; the teacher runs each layer in the
student's current mode (BatchNorm on batch statistics during training) and, like
:class:`tlkit.strategy_tools.EMA`, copies the student's buffers rather than averaging them.

The teacher is returned from ``tlkit_setup``, so checkpoints save and resuming restores it; its
parameters need no gradient, so the optimiser leaves them alone. The engine evaluates the
student (the paper reports the teacher); ``ema=`` in :func:`tlkit.fit` makes the per-epoch
metrics those of a weight average of the student.
"""

from __future__ import annotations

import math

import torch

import tlkit
from tlkit import options
from tlkit.strategy_tools import EMA
from tlkit_strategies.pseudo_label.fixmatch import frozen_bn_statistics

AUGMENTATIONS = ("weak", "strong")  # views of step.target_view


def sigmoid_rampup(progress: float, rampup: float) -> float:
    """``exp(-5 (1 - min(1, progress / rampup))^2)``: 0.0067 at the start, 1 after ``rampup``
    (1 throughout when ``rampup`` is 0)."""
    if rampup <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress) / rampup)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def ema_decay(step: int, decay: float) -> float:
    """The decay used for the update after optimiser step ``step`` (counting from 1)."""
    return min(1.0 - 1.0 / (step + 1), decay)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared distance between the two softmax vectors ``(B, K)``;
    no gradient flows into the teacher."""
    p = student_logits.float().softmax(dim=1)
    q = teacher_logits.detach().float().softmax(dim=1)
    return (p - q).pow(2).sum(dim=1).mean()


class MeanTeacher:
    """Mean Teacher (Tarvainen & Valpola 2017): consistency with an EMA teacher on target data."""

    name = "mean_teacher"
    family = "pseudo_label"
    needs_target = True  # trains on the unlabelled target batch
    requires_task = "classification"  # compares class probabilities
    needs_images = True  # both views are made from images: no frozen-feature cache
    needs_strong_view = True  # photos: the DataLoader makes the strong view (augment="strong")

    def __init__(
        self,
        decay: float = 0.99,
        weight: float = 10.0,
        rampup: float = 0.3,
        augment: str = "weak",
    ) -> None:
        self.decay = options.number("decay", decay)
        if not 0 < self.decay < 1:
            raise ValueError(f"decay must be a number in (0, 1), e.g. 0.99; got {decay!r}")
        self.weight = options.non_negative("weight", weight)
        self.rampup = options.fraction("rampup (a fraction of training)", rampup)
        self.augment = options.choice("augment", augment, sorted(AUGMENTATIONS))
        self.ema: EMA | None = None

    @property
    def teacher(self) -> torch.nn.Module:
        if self.ema is None:
            raise RuntimeError("the teacher is built in tlkit_setup, at the start of a run.")
        return self.ema.module

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> torch.nn.Module:
        self.ema = EMA(trainer.model, self.decay)
        return self.ema.module  # saved in checkpoints and restored on resume

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor]:
        with frozen_bn_statistics(step.model):  # running statistics: clean images only
            _, student_logits = step.forward(step.target_view(self.augment), domain="target")
        teacher_logits = self.teacher_logits(step.trainer, step.target_view(self.augment))
        w = self.weight * sigmoid_rampup(step.progress, self.rampup)
        with torch.no_grad():
            agree = student_logits.argmax(1) == teacher_logits.argmax(1)
            step.log("teacher_agreement", agree.float().mean())
            step.log("mask_rate", float(w > 0))
            step.log_target_predictions(teacher_logits.argmax(1))  # the engine scores them
        return {"consistency": w * softmax_mse(student_logits, teacher_logits)}

    @torch.no_grad()
    def teacher_logits(self, trainer, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(B, K)``, each layer in the student's current mode (BatchNorm on
        batch statistics where the student's is), at the run's precision."""
        teacher = self.teacher
        for t, s in zip(teacher.modules(), trainer.model.modules()):
            t.training = s.training
        try:
            with trainer.autocast():
                return teacher(images).float()
        finally:
            teacher.eval()

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer) -> None:
        self.ema.decay = ema_decay(trainer.state.step, self.decay)
        self.ema.update(trainer.model)
