"""What a strategy may use of the run: :class:`TrainerView` (the trainer, as hooks and
``step.trainer`` see it) and :class:`TrainState` (where training is).

The trainer's type lives here, apart from :mod:`tlkit.step` and :mod:`tlkit.hookspecs`, so both
can name it: this module imports no other part of tlkit. Plugins import these names from
``tlkit.hookspecs`` (``TrainerView``) and ``tlkit.step`` (``TrainState``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import torch
    from torch import nn


@dataclass
class TrainState:
    """Where training is: with the weights, all a checkpoint must restore to resume exactly.

    Attributes:
        epoch: epochs completed (0 before the first ends). The epoch being trained is number
            ``epoch + 1``, which is what ``step.epoch``, the history's ``epoch`` column and
            ``tlkit_on_epoch_end(epoch=...)`` call it: epochs are counted from 1 everywhere.
        step: optimisation steps completed.
        step_in_epoch: steps completed in the current epoch.
        total_steps: steps the whole run will take (``epochs * steps per epoch``).
        stopped_early: the run ended before ``total_steps`` (a stop request or ``max_steps``).
    """

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    total_steps: int = 1
    stopped_early: bool = False

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / max(1, self.total_steps))


class TrainerView(Protocol):
    """What a strategy may use of the trainer its hooks receive (``trainer``, ``step.trainer``).

    :class:`tlkit.Trainer` provides all of it; anything else on the trainer is the engine's and
    may change. The members marked *observers* hold the true target labels or the run's
    results: read them for diagnostics, never to train.
    """

    #: The :class:`~tlkit.backbones.TransferModel` being trained (``backbone``, ``head``).
    model: nn.Module
    #: The run's :class:`tlkit.FitConfig` (``epochs``, ``lr``, ``domain_bn``, ``seed``...).
    config: Any
    #: The training device.
    device: torch.device
    #: ``"fp32"``, ``"bf16"`` or ``"fp16"``; :meth:`autocast` applies it.
    precision: str
    #: ``"classification"`` or ``"regression"``.
    task: str
    #: How many classes (outputs, for regression).
    num_classes: int
    #: The class names.
    classes: tuple[str, ...]
    #: Where training is: ``epoch``, ``step``, ``total_steps``, ``progress``.
    state: TrainState
    #: The averaged model (``.module``) with ``fit(ema=...)``, else ``None``.
    ema: Any
    #: The unlabelled target :class:`~tlkit.datasets.Domain` (true labels removed), or ``None``.
    target: Any
    #: The run's strategies by name (the objects whose hooks run), e.g. to find a partner.
    strategies: Mapping[str, Any]
    #: *Observers*: the task (:class:`~tlkit.datasets.DomainPair`, true target labels included).
    data: Any
    #: *Observers*: the per-epoch rows so far.
    history: list[dict[str, Any]]
    #: *Observers*: the logged step rows so far.
    step_logs: list[dict[str, Any]]
    #: *Observers*: the full metrics of each held-out set at the last evaluation.
    eval_results: dict[str, Any]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the run's precision (a no-op in fp32)."""
        ...

    def target_batches(self, batch_size: int | None = None) -> Iterable[tuple[Any, Any]]:
        """The unlabelled target once, as ``(inputs, indices)`` batches on the device (AdaBN)."""
        ...

    def predict_outputs(
        self, images: torch.Tensor, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Outputs ``(N, K)`` of the model being trained for images ``(N, C, H, W)``, in eval
        mode, without gradients."""
        ...

    def request_stop(self) -> None:
        """End training at the next step boundary (thread-safe)."""
        ...


__all__ = ["TrainState", "TrainerView"]
