"""What a strategy sees, returns and declares during training: :class:`Step`,
:class:`PseudoLabels`, :class:`TrainState`, :class:`OwnOptimizer`. Plugins import them from
``tlkit`` (``tlkit.Step``, ``tlkit.PseudoLabels``, ``tlkit.OwnOptimizer``).

This module is the bottom of the engine: of tlkit it imports only :mod:`tlkit.trainer_view`
(``TrainState`` is defined there, beside the ``TrainerView`` that types ``Step.trainer``), so the
contract (:mod:`tlkit.hookspecs`) can describe these types without importing the training loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from tlkit.trainer_view import TrainerView, TrainState

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import nn


_FORWARD_DOMAIN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tlkit_forward_domain", default=None
)


def forward_domain() -> str | None:
    """Which domain the forward pass running now is for: ``"source"``, ``"target"``, or ``None``
    (a batch holding both, or outside training and evaluation). Domain-specific layers (e.g.
    domain-specific BatchNorm, Chang et al. 2019) read it to pick their statistics."""
    return _FORWARD_DOMAIN.get()


@contextlib.contextmanager
def domain_context(domain: str | None) -> Iterator[None]:
    """Run the enclosed forward passes as passes over ``domain`` (see :func:`forward_domain`)."""
    token = _FORWARD_DOMAIN.set(domain)
    try:
        yield
    finally:
        _FORWARD_DOMAIN.reset(token)


@dataclass
class PseudoLabels:
    """What a pseudo-labelling strategy returns for a target batch of ``B_t`` samples.

    Attributes:
        targets: class ids ``(B_t,)`` int64, or class probabilities ``(B_t, K)`` float (soft
            targets; the first-party losses accept both).
        weights: per-sample weights ``(B_t,)``; 0 masks a sample out.
        logits: the outputs the loss is applied to, ``(B_t, K)``; ``None`` means
            ``step.target_logits``. FixMatch passes the logits of a strongly augmented view.
    """

    targets: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass(frozen=True)
class OwnOptimizer:
    """Optimiser settings of a strategy module trained apart from the model (GANs train their
    generator and discriminator with their own rate and Adam betas, not the classifier's).

    Declare it on the module: ``own_optimizer = tlkit.OwnOptimizer(lr=2e-4)``. The module gets
    an Adam optimiser (decoupled weight decay, AdamW) at a constant learning rate.

    Attributes:
        lr: the module's learning rate (> 0).
        betas: Adam's ``(beta1, beta2)``, each in [0, 1); ``beta1 = 0.5`` is the usual GAN value.
        weight_decay: decoupled weight decay (>= 0).
        loss: ``"adversary"``: trained on the terms of :func:`tlkit_adversary_losses`, after
            the main step (a discriminator); ``"main"``: trained on the main loss, stepped with
            the model's optimiser (a generator whose images the classifier learns from).
        steps: optimiser steps per training step (``"adversary"`` only): the hook is asked
            again for each, so a discriminator takes ``steps`` steps per generator step.
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    loss: str = "adversary"
    steps: int = 1

    def __post_init__(self) -> None:
        def bad(problem: str) -> ValueError:
            return ValueError(f"OwnOptimizer: {problem}")

        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise bad(f"lr must be a number > 0, got {self.lr!r}.")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
        ):
            raise bad(f"betas must be two numbers in [0, 1), such as (0.5, 0.999); got {self.betas!r}.")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
            raise bad(f"weight_decay must be a number >= 0, got {wd!r}.")
        if self.loss not in ("adversary", "main"):
            raise bad(f"loss must be 'adversary' or 'main', got {self.loss!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise bad(f"steps must be an integer >= 1, got {self.steps!r}.")
        if self.loss == "main" and self.steps != 1:
            raise bad(
                "steps > 1 needs loss='adversary': a module trained on the main loss steps once "
                "per training step, with the model."
            )


def _scalar(name: str, value: Any) -> torch.Tensor | float:
    """A loggable scalar: a Python number or a one-element tensor (kept on its device)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"step.log('{name}', ...) takes one number; got a tensor of shape "
                f"{tuple(value.shape)}. Reduce it first (e.g. value.mean())."
            )
        return value.detach().reshape(()).float()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"step.log('{name}', ...) takes a number or a one-element tensor, got "
            f"{type(value).__name__}."
        )
    return float(value)


class StepServices(Protocol):
    """What a training :class:`Step` asks the engine for. The training loop gives each step one;
    strategies call the step's methods, never these."""

    def forward(
        self, images: torch.Tensor, domain: str | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of extra inputs through the network being trained."""
        ...

    def target_view(self, kind: str) -> torch.Tensor:
        """The step's target batch under the ``"weak"`` or ``"strong"`` augmentation."""
        ...

    def judge_targets(self, step: Step, predicted: torch.Tensor, mask: torch.Tensor) -> None:
        """Log how many of the masked-in target predictions are right, where the truth is known."""
        ...


@dataclass
class Step:
    """One optimisation step as the hooks see it. The attributes strategies may rely on.

    Inputs, set before the forward pass:

    - ``index``: global step number, counting from 0.
    - ``epoch``: the epoch being trained, counting from 1.
    - ``progress``: fraction of training done, in [0, 1] (for schedules).
    - ``x``: source inputs ``(B, C, H, W)`` float in [0, 1] -- ``None`` while the backbone's
      features are cached (a frozen backbone and no strategy that ``needs_images``).
    - ``y``: source training labels ``(B,)`` (class ids, or regression targets).
    - ``indices``: positions of the source samples in ``trainer.data.source`` ``(B,)`` int64 --
      for per-sample memories (ELR, Co-teaching+, DivideMix).
    - ``x_target``: unlabelled target inputs ``(B_t, C, H, W)`` or ``None``.
    - ``target_indices``: positions of the target samples in ``trainer.data.target``
      ``(B_t,)``.
    - ``generator``: a ``torch.Generator`` on the training device, seeded from
      ``(seed, step)``: draw a strategy's randomness from it, and the run stays reproducible.

    Outputs of the forward pass, set before the loss hooks run:

    - ``features``, ``logits``: ``(B, D)`` and ``(B, K)`` for the source batch.
    - ``target_features``, ``target_logits``: the same for the target batch (``None`` without
      one).

    Diagnostics, filled by :meth:`log` (read them, write through :meth:`log`):

    - ``stats``: ``{name: value}`` the hooks logged in this step (a Python number or a 0-d
      tensor on the device, synchronised every ``log_every`` steps); they join the step's logs
      and, averaged over the epoch, its history row.
    - ``stat_weights``: ``{name: weight}`` for that average (1 unless ``log(..., weight=)`` says
      how many samples a value was measured on).

    ``trainer`` is the run's trainer, typed by :class:`tlkit.hookspecs.TrainerView` (what a
    strategy may use of it). ``services`` is the engine's (:class:`StepServices`): what
    :meth:`forward`, :meth:`target_view` and :meth:`log_target_predictions` ask it for; a step
    made without it (outside training) refuses those calls.

    The true labels of the target are never on a step: strategies must not see them.
    """

    trainer: TrainerView
    index: int
    epoch: int
    progress: float
    x: torch.Tensor | None
    y: torch.Tensor
    indices: torch.Tensor
    x_target: torch.Tensor | None = None
    target_indices: torch.Tensor | None = None
    generator: torch.Generator | None = None
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    target_features: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None
    stats: dict[str, torch.Tensor | float] = field(default_factory=dict)
    stat_weights: dict[str, torch.Tensor | float] = field(default_factory=dict)
    services: StepServices | None = field(default=None, repr=False)

    @property
    def model(self) -> nn.Module:
        """The :class:`tlkit.backbones.TransferModel` being trained (``trainer.model``)."""
        return self.trainer.model

    def log(
        self, name: str, value: torch.Tensor | float, weight: torch.Tensor | float = 1.0
    ) -> None:
        """Record a diagnostic scalar: logged every ``log_every`` steps and averaged per epoch into
        the history. Averages are weighted: pass ``weight`` = how many samples ``value`` was
        measured on when that changes from step to step -- e.g. the pseudo-labels a threshold
        admits -- so a step that measured nothing does not pull the mean down."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"step.log() needs a metric name, got {name!r}.")
        if name in ("loss", "lr", "step", "epoch"):
            raise ValueError(
                f"step.log('{name}', ...): '{name}' is the engine's; use a name of your own."
            )
        self.stats[name] = _scalar(name, value)
        w = _scalar(f"{name} (weight)", weight)
        if isinstance(w, float) and (w < 0 or not math.isfinite(w)):
            raise ValueError(f"step.log('{name}', ..., weight={weight!r}): weights are >= 0.")
        self.stat_weights[name] = w

    def log_target_predictions(
        self, predicted: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Report the classes a strategy predicts for the target batch (``(B_t,)`` int64), e.g. a
        teacher's labels; ``mask`` ``(B_t,)`` marks the ones it uses. The engine compares them
        with the target's true labels, which strategies never see, and logs
        ``pseudo_label_accuracy`` over the masked-in samples (where the truth is known)."""
        if self.services is None or self.target_indices is None:
            raise ValueError("log_target_predictions() needs a target batch in this step.")
        if mask is None:
            mask = torch.ones(len(predicted), dtype=torch.bool, device=predicted.device)
        self.services.judge_targets(self, predicted, mask)

    def target_view(self, kind: str) -> torch.Tensor:
        """The target batch under a ``"weak"`` or ``"strong"`` augmentation made for the data:
        the digit-safe views, batch-wise on the device, for small in-memory images; for photos,
        the DataLoader's per-sample crop-and-flip (weak) and TrivialAugment (strong) views --
        declare ``needs_strong_view = True`` to have the workers make the strong one. Drawn from
        :attr:`generator`, so reproducible. FixMatch and Mean Teacher use it."""
        if self.services is None or self.target_indices is None:
            raise ValueError("target_view() needs a target batch in this step (needs_target).")
        if kind not in ("weak", "strong"):
            raise ValueError(f"target_view() takes 'weak' or 'strong', got {kind!r}.")
        return self.services.target_view(kind)

    def forward(
        self, images: torch.Tensor, domain: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of extra inputs (e.g. a strongly augmented view, float in
        [0, 1]) through the same network and precision as the step's own forward pass, with
        gradients. ``domain`` (``"source"``/``"target"``) says whose images they are, for
        domain-specific layers."""
        if self.services is None:
            raise ValueError("step.forward() is only available during training.")
        return self.services.forward(images, domain)


__all__ = ["OwnOptimizer", "PseudoLabels", "Step", "StepServices", "TrainState"]
