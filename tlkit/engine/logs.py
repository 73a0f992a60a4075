"""Step scalars: log windows every ``log_every`` steps, epoch means, and the non-finite check.

Scalars stay on the device as tensors until a window is flushed, so logging never forces a
device sync per step. Means are weighted (see :meth:`tlkit.Step.log`).
"""

from __future__ import annotations

from typing import Any

import torch


class NonFiniteLoss(Exception):
    """The loss of ``step`` was not finite (internal: the trainer turns it into a
    :class:`tlkit.TrainingError` that says what to do)."""

    def __init__(self, step: int, value: float, scalars: dict[str, float]) -> None:
        super().__init__(step, value)
        self.step, self.value, self.scalars = step, value, scalars


class StepLog:
    """Collects each step's scalars; ``flush`` averages a window, ``epoch_means`` an epoch."""

    def __init__(self) -> None:
        self.windows: list[dict[str, float]] = []  # the run's step_logs
        self.sums: dict[str, Any] = {}
        self.weights: dict[str, Any] = {}
        self.pending: list[tuple[int, dict[str, Any], dict[str, Any]]] = []

    def start_epoch(self) -> None:
        self.sums, self.weights = {}, {}

    def add(self, step: int, scalars: dict[str, Any], weights: dict[str, Any]) -> None:
        for k, v in scalars.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * weights[k]
            self.weights[k] = self.weights.get(k, 0.0) + weights[k]
        self.pending.append((step, scalars, weights))

    def flush(self, epoch: int) -> dict[str, float]:
        """Average the pending steps into one window (appended to :attr:`windows`, returned);
        raises :class:`NonFiniteLoss` at the first step whose loss is not finite."""
        if not self.pending:
            return {}
        pending, self.pending = self.pending, []
        losses = torch.stack([torch.as_tensor(s["loss"]).float().cpu() for _, s, _ in pending])
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        if len(bad):
            step, scalars, _ = pending[int(bad[0])]
            raise NonFiniteLoss(
                step, float(losses[bad[0]]), {k: float(v) for k, v in scalars.items()}
            )
        window = {}
        keys = dict.fromkeys(k for _, s, _ in pending for k in s)  # every key, first-seen order
        for key in keys:
            total = sum(float(w[key]) for _, s, w in pending if key in s)
            if total > 0:  # weighted mean over the steps of the window that measured it
                value = sum(float(s[key]) * float(w[key]) for _, s, w in pending if key in s)
                window[key] = value / total
        self.windows.append({"step": pending[-1][0], "epoch": epoch, **window})
        return window

    def epoch_means(self) -> dict[str, float]:
        """Weighted mean of every scalar over the epoch; ``loss`` is reported as ``train_loss``."""
        row = {}
        for k, v in self.sums.items():
            weight = float(self.weights[k])
            row["train_loss" if k == "loss" else k] = (
                float(v) / weight if weight > 0 else float("nan")
            )
        return row

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_logs": list(self.windows),
            "epoch_sums": {k: float(v) for k, v in self.sums.items()},
            "epoch_weights": {k: float(v) for k, v in self.weights.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = list(state["step_logs"])
        self.sums = dict(state["epoch_sums"])
        self.weights = dict(state["epoch_weights"])
        self.pending = []
