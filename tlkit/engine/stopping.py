"""Early stopping (``patience=``) and keeping the best epoch (``restore_best=``).

Both follow the run's monitored metric (``monitor=``, the one that also picks ``best.pt``):

* ``patience=N`` ends the run after ``N`` epochs in a row without a better value; the run says
  why it stopped (``run.stop_reason``) and ``run.stopped_early`` is true.
* ``restore_best=True`` keeps a copy of the weights (the EMA weights with ``ema=``) each time the
  monitor improves -- in memory, with or without ``checkpoint_dir`` -- and the run returns that
  copy; ``run.restored_from`` says which epoch and metric chose it.

Choosing epochs needs labelled data of the distribution the model is for. In an adaptation run
(a target that differs from the source and has no labels to train on) ``monitor="auto"`` would
choose by *source* accuracy, which can keep the epoch before adaptation helped, so both options
refuse it there: the user names the monitor (a validator's score, a labelled target test set, or
source accuracy on purpose). A validator's score is never chosen by itself.

The patience counter and the kept weights are saved in training checkpoints, so a resumed run
stops at the same epoch and returns the same weights as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import FitConfig
from tlkit.errors import CheckpointError, ConfigError


def check_monitor(config: FitConfig, data: DomainPair, resolved: str) -> None:
    """Refuse ``patience`` / ``restore_best`` with ``monitor="auto"`` in an adaptation run (see
    the module docstring); ``resolved`` is what ``"auto"`` became."""
    asked = [
        f"{name}={value!r}"
        for name, value, on in (
            ("patience", config.patience, config.patience is not None),
            ("restore_best", config.restore_best, config.restore_best),
        )
        if on
    ]
    if not asked or config.monitor != "auto" or data.target is None:
        return
    if data.target_test is not None and data.target_test is data.source_test:
        return  # one domain (semi-supervised): its test set is the target's
    kind = "accuracy" if data.task == "classification" else "mae"
    choices = ["monitor='score_info_max' with validate='info_max' (computed on the target)"]
    if data.target_test is not None:
        choices.append(f"monitor='target_{kind}' (the labelled target test set)")
    choices.append(f"monitor='source_{kind}' to choose by the source on purpose")
    raise ConfigError(
        f"{' and '.join(asked)} choose epochs by the monitored metric, but this run adapts to "
        f"an unlabelled target, where monitor='auto' would choose by '{resolved}' (the "
        f"source, not the target the model is for). Name the monitor: {'; '.join(choices)}."
    )


class EarlyStopping:
    """The run's patience counter and kept weights (see the module docstring)."""

    def __init__(self, config: FitConfig, data: DomainPair, monitor: str) -> None:
        check_monitor(config, data, monitor)
        self.patience = config.patience
        self.restore_best = config.restore_best
        self.monitor = monitor
        self.wait = 0  # epochs since the monitor last improved
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_info: dict[str, Any] | None = None  # epoch, metric, value of best_state
        self.reason: str | None = None
        self.restored: dict[str, Any] | None = None

    @staticmethod
    def _model(trainer: Any) -> torch.nn.Module:
        """The weights the history measures and the run returns (EMA's when on)."""
        return trainer.ema.module if trainer.ema is not None else trainer.model

    def epoch_end(self, trainer: Any, improved: bool) -> None:
        """After the monitor was compared: count, or keep the improved weights."""
        if not improved:
            self.wait += 1
            return
        self.wait = 0
        if self.restore_best:
            state = self._model(trainer).state_dict()
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            best = trainer.best
            self.best_info = {
                "epoch": best["epoch"],
                "metric": best["metric"],
                "value": best["value"],
            }

    def should_stop(self, trainer: Any) -> bool:
        """Whether the patience is spent (checked before each epoch; a resumed run that had
        stopped stays stopped). Marks the run as stopped early, with the reason."""
        if self.patience is None or self.wait < self.patience:
            return False
        best = trainer.best
        self.reason = (
            f"early stopping (patience={self.patience}): {self.monitor} did not improve for "
            f"{self.wait} epochs after its best, {best['value']:.4g} at epoch {best['epoch']}"
        )
        trainer.state.stopped_early = True
        return True

    def restore(self, trainer: Any) -> None:
        """At the end of training: put the kept weights into the returned model."""
        if not self.restore_best or self.best_state is None:
            return
        self._model(trainer).load_state_dict(self.best_state)
        self.restored = dict(self.best_info or {})

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best_state": self.best_state, "best_info": self.best_info}

    def load_state_dict(self, state: dict[str, Any] | None, trainer: Any) -> None:
        """Restore from a checkpoint (one written without this state: the counter from the
        history, and no kept weights)."""
        best_epoch = trainer.best.get("epoch")
        if not state:
            self.wait = len(trainer.history) - best_epoch if best_epoch else 0
            self.best_state = self.best_info = None
        else:
            self.wait = int(state.get("wait", 0))
            self.best_state, self.best_info = state.get("best_state"), state.get("best_info")
        if self.restore_best and best_epoch and self.best_state is None:
            raise CheckpointError(
                f"restore_best=True, but the checkpoint keeps no weights of the best epoch "
                f"({best_epoch}): it was written by a run without restore_best. Resume with "
                "restore_best=False (checkpoint_dir/best.pt holds the best epoch's weights)."
            )
