"""``log_dir=``: every logged value in ``log_dir/metrics.csv``, and TensorBoard scalars when the
``tensorboard`` package is installed.

The CSV has one row per log window (``kind`` = ``step``: the losses and diagnostics averaged over
``log_every`` steps, and the learning rate) and one per epoch (``kind`` = ``epoch``: the history
row: train loss, held-out metrics, validator scores, learning rate), in step order. The header is
``kind, epoch, step`` followed by every value's name in the order they first appeared; a value
first logged later (a strategy's diagnostic, an epoch's metric) widens the header once -- the
file is rewritten with it -- and rows without that value leave the cell empty. Numbers are written
in full precision, so ``pandas.read_csv`` gives back exactly what ``run.history`` holds.

TensorBoard (``pip install "tlkit[tensorboard]"``; PyTorch's ``torch.utils.tensorboard`` writes the
events) gets each value as a scalar ``step/<name>`` or ``epoch/<name>``, both at the global step.
Without the package the CSV is written alone, without an error.

A resumed run keeps the rows written up to its checkpoint's step and drops any written after it
(events the interrupted run logged past its last checkpoint), so the file reads as if the run had
never stopped; TensorBoard gets ``purge_step`` for the same reason. A new run in the same folder
replaces ``metrics.csv``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from tlkit.hookspecs import hookimpl

FILE = "metrics.csv"
_FIRST = ["kind", "epoch", "step"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _tensorboard(folder: Path, purge_step: int | None) -> Any:
    """A ``SummaryWriter`` for ``folder``, or ``None`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


class MetricsLog:
    """Observer of one run that writes ``log_dir`` (see the module docstring)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.folder = Path(log_dir)
        self.path = self.folder / FILE
        self.rows: list[dict[str, str]] = []
        self.columns: list[str] = list(_FIRST)
        self.windows = 0  # trainer.step_logs already written
        self.epochs = 0  # trainer.history rows already written
        self.writer: Any = None
        self.started = False  # on_fit_end also comes after a failed start: nothing to write

    # -- observer hooks --------------------------------------------------------------------
    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = trainer.state
        self.rows = self._earlier_rows(trainer) if state.step > 0 else []
        self.columns = list(_FIRST)
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        self.windows, self.epochs = len(trainer.step_logs), len(trainer.history)
        self._rewrite()
        self.writer = _tensorboard(self.folder, state.step if state.step > 0 else None)
        self.started = True

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self._sync(trainer, lr=logs.get("lr") if logs else None)

    @hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self._sync(trainer)
        if self.writer is not None:
            self.writer.flush()

    @hookimpl
    def tlkit_on_fit_end(self, trainer: Any) -> None:
        if not self.started:
            return
        self.started = False
        self._sync(trainer)  # a window flushed when the run stopped
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- rows ------------------------------------------------------------------------------
    def _sync(self, trainer: Any, lr: float | None = None) -> None:
        """Write the log windows and history rows that appeared since the last call; ``lr``
        belongs to the newest window (the trainer passes it to observers, not to the window)."""
        windows = trainer.step_logs[self.windows :]
        for i, window in enumerate(windows):
            values = dict(window)
            if lr is not None and i == len(windows) - 1:
                values["lr"] = lr
            self._add("step", values)
        self.windows += len(windows)
        for row in trainer.history[self.epochs :]:
            self._add("epoch", row)
        self.epochs = len(trainer.history)

    def _add(self, kind: str, values: dict[str, Any]) -> None:
        row = {"kind": kind, **{k: _cell(v) for k, v in values.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        if self.writer is not None:
            self._scalars(kind, values)

    def _scalars(self, kind: str, values: dict[str, Any]) -> None:
        step = int(values["step"])
        for key, value in values.items():
            if key in ("step", "epoch") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def _rewrite(self) -> None:
        """The whole file, with the current header (written beside it, then moved over it)."""
        tmp = self.path.with_name(f".{FILE}.tmp")
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(self.columns)
            out.writerows([row.get(c, "") for c in self.columns] for row in self.rows)
        os.replace(tmp, self.path)

    def _earlier_rows(self, trainer: Any) -> list[dict[str, str]]:
        """A resumed run's rows up to its checkpoint: from the file when there is one, else
        from the restored history and log windows."""
        step = trainer.state.step
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
            return [{k: v for k, v in r.items() if v not in ("", None)} for r in keep]
        rows = [("step", w) for w in trainer.step_logs] + [("epoch", r) for r in trainer.history]
        rows.sort(key=lambda kr: (int(kr[1]["step"]), kr[0] == "epoch"))
        return [{"kind": kind, **{k: _cell(v) for k, v in r.items()}} for kind, r in rows]
